//! The cluster store against real etcd members (Debian's etcd-server, which
//! `make test` installs): compare-and-swap, transactions, listing, leases
//! and the fencing rule, and a three-member cluster losing members.

#![allow(clippy::unwrap_used)] // a failed step is the test failing

use std::path::Path;
use std::time::Duration;

use cluster::member::free_loopback_port;
use cluster::{Batch, Lease, LeaseState, Member, MemberConfig, Store, StoreError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Rec {
    name: String,
    memory_mib: u64,
}

fn rec(name: &str, memory_mib: u64) -> Rec {
    Rec {
        name: name.into(),
        memory_mib,
    }
}

/// Configurations of `n` members of one new cluster on loopback ports.
fn members(dir: &Path, n: usize) -> Vec<MemberConfig> {
    let ports: Vec<(u16, u16)> = (0..n)
        .map(|_| (free_loopback_port().unwrap(), free_loopback_port().unwrap()))
        .collect();
    let initial: Vec<(String, String)> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| (format!("m{i}"), format!("http://127.0.0.1:{peer}")))
        .collect();
    ports
        .iter()
        .enumerate()
        .map(|(i, (client, peer))| MemberConfig {
            name: format!("m{i}"),
            data_dir: dir.join(format!("m{i}")),
            client_url: format!("http://127.0.0.1:{client}"),
            peer_url: format!("http://127.0.0.1:{peer}"),
            initial_cluster: initial.clone(),
            new_cluster: true,
            cluster_token: "test".into(),
            heartbeat: Duration::from_millis(100),
            election: Duration::from_millis(1000),
            log: dir.join(format!("m{i}.log")),
            tls: None,
        })
        .collect()
}

async fn one_member(dir: &Path) -> (Member, Store) {
    let config = members(dir, 1).remove(0);
    let url = config.client_url.clone();
    let mut m = Member::start(config).expect("etcd starts");
    m.wait_serving(Duration::from_secs(20), None)
        .await
        .expect("etcd serves");
    let store = Store::connect(&[url], "/sfera/", None)
        .await
        .expect("connects");
    (m, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_compare_and_swap_on_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let (member, store) = one_member(dir.path()).await;
    let key = store.key("vms", "web1");

    let r1 = store.create(&key, &rec("web1", 512)).await.unwrap();
    let err = store.create(&key, &rec("web1", 1)).await.unwrap_err();
    assert!(matches!(err, StoreError::Exists { .. }), "{err:?}");

    // Two editors read the same revision: the first write wins, the
    // second is refused and changes nothing.
    let read = store.get::<Rec>(&key).await.unwrap().unwrap();
    assert_eq!(read.revision, r1);
    let r2 = store
        .update(&key, &rec("web1", 1024), read.revision)
        .await
        .unwrap();
    assert!(r2 > r1);
    let err = store
        .update(&key, &rec("web1", 2048), read.revision)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { expected, .. } if expected == r1),
        "{err:?}"
    );
    assert_eq!(
        store
            .get::<Rec>(&key)
            .await
            .unwrap()
            .unwrap()
            .value
            .memory_mib,
        1024
    );

    let err = store.delete(&key, r1).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    store.delete(&key, r2).await.unwrap();
    assert!(store.get::<Rec>(&key).await.unwrap().is_none());
    let err = store.update(&key, &rec("web1", 1), r2).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    member.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_applies_every_write_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let (member, store) = one_member(dir.path()).await;
    let vm = store.key("vms", "id-1");
    let name = store.key("vm-names", "web1");
    let host = store.key("hosts", "a");
    let host_rev = store.create(&host, &rec("a", 4096)).await.unwrap();

    // A VM and its name index together, decided on the host's record.
    let batch = Batch::new()
        .create(&vm, &rec("web1", 512))
        .unwrap()
        .create(&name, &"id-1")
        .unwrap()
        .require(&host, host_rev);
    store.commit(batch).await.unwrap();

    // A second VM under the same name: the index refuses it, and the VM
    // record of the same batch is not written either.
    let vm2 = store.key("vms", "id-2");
    let batch = Batch::new()
        .create(&vm2, &rec("web1", 256))
        .unwrap()
        .create(&name, &"id-2")
        .unwrap();
    let err = store.commit(batch).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Exists { key } if *key == name),
        "{err:?}"
    );
    assert!(store.get::<Rec>(&vm2).await.unwrap().is_none());

    // The host changed after the decision: nothing is written.
    let host_rev2 = store
        .update(&host, &rec("a", 2048), host_rev)
        .await
        .unwrap();
    let vm3 = store.key("vms", "id-3");
    let batch = Batch::new()
        .create(&vm3, &rec("db", 8192))
        .unwrap()
        .require(&host, host_rev);
    let err = store.commit(batch).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict { key, .. } if *key == host),
        "{err:?}"
    );
    assert!(store.get::<Rec>(&vm3).await.unwrap().is_none());
    assert!(host_rev2 > host_rev);

    // A record that belongs to another is written only while that one is
    // there, and goes with it.
    let status = store.key("vm-status", "id-1");
    let batch = Batch::new()
        .require_present(&vm)
        .put(&status, &"running", None)
        .unwrap();
    store.commit(batch).await.unwrap();
    let gone = store.get::<Rec>(&vm).await.unwrap().unwrap().revision;
    let batch = Batch::new().delete(&vm, gone).remove(&name).remove(&status);
    store.commit(batch).await.unwrap();
    assert!(store.get::<String>(&status).await.unwrap().is_none());
    assert!(store.get::<String>(&name).await.unwrap().is_none());
    let batch = Batch::new()
        .require_present(&vm)
        .put(&status, &"running", None)
        .unwrap();
    let err = store.commit(batch).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { key } if *key == vm),
        "{err:?}"
    );
    assert!(store.get::<String>(&status).await.unwrap().is_none());
    member.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_spans_pages_at_one_revision() {
    let dir = tempfile::tempdir().unwrap();
    let (member, store) = one_member(dir.path()).await;
    // More than two pages of 500, written 100 per transaction.
    for chunk in 0..12 {
        let mut batch = Batch::new();
        for i in 0..100 {
            let n = chunk * 100 + i;
            batch = batch
                .create(&store.key("vms", &format!("vm{n:05}")), &rec("x", n))
                .unwrap();
        }
        store.commit(batch).await.unwrap();
    }
    // Another kind right after the prefix must not leak in.
    store
        .create(&store.key("vms0", "other"), &rec("y", 1))
        .await
        .unwrap();
    let all = store.list::<Rec>("vms").await.unwrap();
    assert_eq!(all.len(), 1200);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "in key order");
    assert_eq!(all[1199].1.value.memory_mib, 1199);

    // A corrupt record is an error that names it, not a silent skip.
    let mut kv = store.client().kv_client();
    kv.put(store.key("vms", "vm99999"), "{not json", None)
        .await
        .unwrap();
    let err = store.list::<Rec>("vms").await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { key, .. } if key.ends_with("vm99999")),
        "{err:?}"
    );
    member.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_lives_while_renewed_and_takes_its_records_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let (member, store) = one_member(dir.path()).await;
    let lease = Lease::grant(&store, Duration::from_secs(2)).await.unwrap();
    let key = store.key("host-alive", "a");
    store
        .commit(
            Batch::new()
                .put(&key, &rec("a", 1), Some(lease.id()))
                .unwrap(),
        )
        .await
        .unwrap();
    // Three TTLs later it is still there: the keeper renews it.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(matches!(lease.state(), LeaseState::Held { .. }));
    assert!(store.get::<Rec>(&key).await.unwrap().is_some());
    lease.revoke().await.unwrap();
    assert!(store.get::<Rec>(&key).await.unwrap().is_none());
    member.stop().await;
}

/// The fencing rule: a holder that cannot renew counts its lease lost no
/// later than TTL after its last answered renewal, while etcd (gone here)
/// cannot have ended it sooner than that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_cannot_renew_counts_its_lease_lost_within_its_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let (member, store) = one_member(dir.path()).await;
    let lease = Lease::grant(&store, Duration::from_secs(3)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let LeaseState::Held { until } = lease.state() else {
        panic!("held while etcd runs")
    };
    let stopped = tokio::time::Instant::now();
    member.stop().await;
    let mut watch = lease.watch();
    tokio::time::timeout(
        Duration::from_secs(5),
        watch.wait_for(|s| *s == LeaseState::Lost),
    )
    .await
    .expect("counted lost within the TTL")
    .unwrap();
    let lost_at = tokio::time::Instant::now();
    assert!(
        lost_at >= until.min(stopped),
        "not before the renewal bound"
    );
    assert!(lost_at <= stopped + Duration::from_secs(3) + Duration::from_millis(500));
}

/// Three members: one down changes nothing; two down and every call
/// answers "unavailable" within the call deadline instead of hanging; with
/// the quorum back, writes resume and nothing committed before is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_survive_one_loss_and_say_so_when_the_quorum_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let configs = members(dir.path(), 3);
    let urls: Vec<String> = configs.iter().map(|c| c.client_url.clone()).collect();
    let mut running: Vec<Option<Member>> = configs
        .iter()
        .map(|c| Some(Member::start(c.clone()).expect("starts")))
        .collect();
    for m in running.iter_mut().flatten() {
        m.wait_serving(Duration::from_secs(30), None)
            .await
            .expect("serves");
    }
    let store = Store::connect(&urls, "/sfera/", None).await.unwrap();
    let key = store.key("vms", "web1");
    let mut rev = store.create(&key, &rec("web1", 1)).await.unwrap();

    running[0].take().unwrap().stop().await;
    for i in 2..5 {
        rev = store
            .update(&key, &rec("web1", i), rev)
            .await
            .expect("two of three serve");
    }

    running[1].take().unwrap().stop().await;
    let started = std::time::Instant::now();
    let err = store.update(&key, &rec("web1", 99), rev).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("unavailable"), "{err}");

    let mut back = Member::start(configs[1].clone()).unwrap();
    back.wait_serving(Duration::from_secs(30), None)
        .await
        .unwrap();
    let read = loop {
        match store.get::<Rec>(&key).await {
            Ok(r) => break r.unwrap(),
            Err(StoreError::Unavailable(_)) if started.elapsed() < Duration::from_secs(60) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    // A write that timed out has an unknown outcome: the surviving member
    // may hold the proposal and commit it once the quorum is back. It is
    // applied whole or not at all, and nothing earlier is lost.
    assert!([4, 99].contains(&read.value.memory_mib), "{read:?}");
    store
        .update(&key, &rec("web1", 5), read.revision)
        .await
        .expect("writes resume");
    back.stop().await;
    running[2].take().unwrap().stop().await;
}

/// A member set up with the cluster's authority serves only clients whose
/// certificate that authority signed: not a plain-HTTP client, not one
/// without a certificate, not one with another cluster's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_serves_only_clients_the_cluster_signed() {
    use cluster::pki::{ClientTls, TlsDir, ensure_member_files};
    let dir = tempfile::tempdir().unwrap();
    let tls = TlsDir(dir.path().join("tls"));
    ensure_member_files(&tls, "c1", "m0", &["127.0.0.1".into()]).unwrap();
    let mut config = members(dir.path(), 1).remove(0);
    config.client_url = config.client_url.replace("http://", "https://");
    config.peer_url = config.peer_url.replace("http://", "https://");
    config.initial_cluster = vec![("m0".into(), config.peer_url.clone())];
    config.tls = Some(cluster::MemberTls {
        ca: tls.ca(),
        cert: tls.member_cert(),
        key: tls.member_key(),
    });
    let url = config.client_url.clone();
    let client = tls.client().unwrap();
    let mut member = Member::start(config).unwrap();
    member
        .wait_serving(Duration::from_secs(20), Some(&client))
        .await
        .expect("serves the cluster's client");
    let store = Store::connect(std::slice::from_ref(&url), "/sfera/", Some(&client))
        .await
        .unwrap();
    store
        .create(&store.key("users", "admin"), &rec("admin", 0))
        .await
        .unwrap();

    // Another cluster's client certificate.
    let other = TlsDir(dir.path().join("other"));
    ensure_member_files(&other, "c2", "x", &["127.0.0.1".into()]).unwrap();
    let stranger = ClientTls {
        ca: client.ca.clone(),
        ..other.client().unwrap()
    };
    let refused = async {
        let s = Store::connect(std::slice::from_ref(&url), "/sfera/", Some(&stranger)).await?;
        s.get::<Rec>(&s.key("users", "admin")).await
    }
    .await;
    assert!(
        refused.is_err(),
        "another cluster's client read {refused:?}"
    );
    // No client certificate at all: trusting the CA is not enough. (curl,
    // because etcd's client would not say why it failed; the member
    // serves /version on its client URL to anyone it lets in.)
    let curl = |cert: Option<(&Path, &Path)>| {
        let mut c = std::process::Command::new("curl");
        c.args(["-sS", "--max-time", "5", "--cacert"]).arg(tls.ca());
        if let Some((cert, key)) = cert {
            c.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        c.arg(format!("{url}/version"));
        c.output().expect("curl runs (make test installs it)")
    };
    let with = curl(Some((&tls.client_cert(), &tls.client_key())));
    assert!(with.status.success(), "{with:?}");
    assert!(
        String::from_utf8_lossy(&with.stdout).contains("etcdserver"),
        "{with:?}"
    );
    let without = curl(None);
    assert!(
        !without.status.success(),
        "a client without a certificate got {without:?}"
    );
    let plain = url.replace("https://", "http://");
    let refused = async {
        let s = Store::connect(&[plain], "/sfera/", None).await?;
        s.get::<Rec>(&s.key("users", "admin")).await
    }
    .await;
    assert!(refused.is_err(), "a plain client read {refused:?}");
    member.stop().await;
}
