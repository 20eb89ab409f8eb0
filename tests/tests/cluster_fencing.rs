//! A partitioned host of a three-host etcd cluster counts its lease lost before the others see it gone, comes back whole, and the store survives one dead member and says so when two are.
//!
//! Each host is a network namespace of a [`ClusterNet`] with one etcd
//! member on its own address, and a `cluster::Store` and `cluster::Lease`
//! (TTL 3 s) of its own, connected to its own member; `host-alive/<host>`
//! is tied to the lease. Everything that opens a socket or starts etcd
//! runs on the host's [`NsRuntime`]. The cases share that one set-up and
//! run in order:
//!
//! 1. `partition`: host C is cut off. Its lease is counted lost within
//!    TTL + 1 s, A sees `host-alive/c` disappear, and not before C's
//!    lease was counted lost (the fencing rule); A and B keep writing.
//! 2. `heal`: C is routed again; its store answers, it holds a new lease
//!    and `host-alive/c` is back, and it reads everything A and B wrote.
//! 3. `quorum`: with A's member killed, B and C still write; with B's too,
//!    C's write is refused as unavailable within 10 s; with both back,
//!    writes resume.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cluster::{Batch, Lease, LeaseState, Member, MemberConfig, Store, StoreError};
use harness::cluster_net::ClusterNet;
use harness::ns_runtime::{NsRuntime, Task};
use harness::scenario::case;
use harness::testdir::TestDir;

/// The hosts' lease TTL.
const TTL: Duration = Duration::from_secs(3);
const NAMES: [&str; 3] = ["a", "b", "c"];
const A: usize = 0;
const B: usize = 1;
const C: usize = 2;

/// One host: its runtime in its namespace, its etcd member, and its own
/// connection and lease.
struct Host {
    name: &'static str,
    // Dropped before the runtime: a member still running is killed
    // (`kill_on_drop`) while its runtime can still reap it.
    member: Option<Member>,
    config: MemberConfig,
    lease: Option<Lease>,
    store: Store,
    runtime: NsRuntime,
}

/// The hosts, their network and their files, dropped in that order.
struct Cluster {
    hosts: Vec<Host>,
    net: ClusterNet,
    _dir: TestDir,
}

impl Host {
    fn alive_key(&self, host: &str) -> String {
        self.store.key("host-alive", host)
    }

    fn counter_key(&self, host: &str) -> String {
        self.store.key("counters", host)
    }

    /// Runs `f` with a clone of this host's store, in its namespace.
    fn with_store<T, F, Fut>(&self, f: F) -> T
    where
        F: FnOnce(Store) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.runtime.run(f(self.store.clone()))
    }

    /// Starts `f` with a clone of this host's store, in its namespace.
    fn spawn_with_store<T, F, Fut>(&self, f: F) -> Task<T>
    where
        F: FnOnce(Store) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.runtime.spawn(f(self.store.clone()))
    }

    /// Starts the host's member again (with the data it has).
    fn start_member(&mut self) -> Result<()> {
        let config = self.config.clone();
        let member = self.runtime.run(async move {
            let mut member = Member::start(config)?;
            member.wait_serving(Duration::from_secs(30), None).await?;
            anyhow::Ok(member)
        });
        self.member = Some(member.with_context(|| format!("member {} starts", self.name))?);
        Ok(())
    }

    /// Kills the host's member with SIGKILL, as a crash would.
    fn kill_member(&mut self) {
        let Some(member) = self.member.take() else {
            return;
        };
        self.runtime.run(async move {
            if let Some(pid) = member.pid().and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: kill(2) of our own child, not reaped yet (stop()
                // below reaps it), so the pid names no other process.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            member.stop().await;
        });
    }

    /// Grants the host a new lease and ties `host-alive/<host>` to it.
    fn announce(&mut self) -> Result<()> {
        let key = self.alive_key(self.name);
        let name = self.name;
        let lease = self.with_store(move |store| async move {
            let lease = Lease::grant(&store, TTL).await?;
            let alive = Batch::new().put(&key, &name, Some(lease.id()))?;
            store.commit(alive).await?;
            Ok::<_, StoreError>(lease)
        });
        self.lease = Some(lease.with_context(|| format!("host {} announces itself", self.name))?);
        Ok(())
    }
}

/// Configurations of one member per host, each on its host's address.
fn member_configs(net: &ClusterNet, dir: &TestDir) -> Vec<MemberConfig> {
    let peer = |i: usize| format!("http://{}:2380", net.addr(i));
    let initial: Vec<(String, String)> = NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| (name.to_string(), peer(i)))
        .collect();
    NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| MemberConfig {
            name: name.to_string(),
            data_dir: dir.join(format!("{name}/etcd")),
            client_url: format!("http://{}:2379", net.addr(i)),
            peer_url: peer(i),
            initial_cluster: initial.clone(),
            new_cluster: true,
            cluster_token: "cluster-fencing".into(),
            heartbeat: Duration::from_millis(100),
            election: Duration::from_millis(1000),
            log: dir.join(format!("{name}.log")),
            tls: None,
        })
        .collect()
}

/// Three hosts, their members serving, each host connected to its own
/// member, alive, and with a counter record that it alone writes.
fn start_cluster() -> Result<Cluster> {
    let dir = TestDir::new("cluster_fencing")?;
    let net = ClusterNet::new(NAMES.len())?;
    let mut members = Vec::new();
    let mut runtimes = Vec::new();
    for (i, config) in member_configs(&net, &dir).into_iter().enumerate() {
        let runtime = NsRuntime::start(net.host(i), &format!("host-{}", NAMES[i]))?;
        let member = runtime.run({
            let config = config.clone();
            async move { Member::start(config) }
        })?;
        members.push((member, config));
        runtimes.push(runtime);
    }
    let mut hosts = Vec::new();
    for (i, ((mut member, config), runtime)) in members.into_iter().zip(runtimes).enumerate() {
        // Each waits for the quorum of all three, started above.
        let url = config.client_url.clone();
        let (member, store) = runtime.run(async move {
            member.wait_serving(Duration::from_secs(30), None).await?;
            let store = Store::connect(&[url], "/sfera/", None).await?;
            anyhow::Ok((member, store))
        })?;
        let mut host = Host {
            name: NAMES[i],
            member: Some(member),
            config,
            lease: None,
            store,
            runtime,
        };
        host.announce()?;
        let counter = host.counter_key(host.name);
        host.with_store(|store| async move { store.create(&counter, &0u64).await })?;
        hosts.push(host);
    }
    Ok(Cluster {
        hosts,
        net,
        _dir: dir,
    })
}

/// When host C counted its lease lost: the bound its last answered renewal
/// gave, at which its keeper decides, and when the report reached a task.
#[derive(Debug, Clone, Copy)]
struct Counted {
    bound: Instant,
    reported: Instant,
}

/// Follows `lease` until it is counted lost (None if it is not within
/// `within`).
async fn counted_lost(
    mut state: tokio::sync::watch::Receiver<LeaseState>,
    within: Duration,
) -> Option<Counted> {
    let until = tokio::time::Instant::now() + within;
    let mut bound = None;
    loop {
        match *state.borrow_and_update() {
            LeaseState::Held { until } => bound = Some(until.into_std()),
            LeaseState::Lost => {
                return Some(Counted {
                    bound: bound.expect("a lease is held when granted"),
                    reported: Instant::now(),
                });
            }
        }
        let changed = tokio::time::timeout_at(until, state.changed()).await;
        if !matches!(changed, Ok(Ok(()))) {
            return None;
        }
    }
}

/// Waits until the lease behind `state` has been renewed `times` times,
/// up to `within`.
async fn renewed(
    mut state: tokio::sync::watch::Receiver<LeaseState>,
    times: usize,
    within: Duration,
) -> Result<()> {
    let until = tokio::time::Instant::now() + within;
    for _ in 0..times {
        tokio::time::timeout_at(until, state.changed()).await??;
        ensure!(*state.borrow() != LeaseState::Lost, "the lease was lost");
    }
    Ok(())
}

/// The first instant a read of `key` finds it absent (None if it is still
/// there after `within`). Reads refused meanwhile (a new leader being
/// elected) are tried again.
async fn first_seen_gone(store: Store, key: String, within: Duration) -> Option<Instant> {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if let Ok(None) = store.get::<String>(&key).await {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// What a writer confirmed: each success's instant, and the last value
/// with its revision.
#[derive(Debug, Default)]
struct Writes {
    at: Vec<Instant>,
    last: u64,
    revision: i64,
}

/// Increments the counter at `key` by compare-and-swap until `stop`, and
/// then until a write is confirmed: a write refused as unavailable has an
/// unknown outcome, and the confirmed write that follows it decides the
/// record (the unknown one, if it commits later, fails its condition).
async fn keep_writing(store: Store, key: String, stop: Arc<AtomicBool>) -> Result<Writes> {
    let mut writes = Writes::default();
    let mut known: Option<(u64, i64)> = None;
    let mut confirmed = false;
    while !(confirmed && stop.load(Ordering::Relaxed)) {
        match known {
            None => match store.get::<u64>(&key).await {
                Ok(Some(read)) => known = Some((read.value, read.revision)),
                Ok(None) => bail!("{key} is gone"),
                Err(StoreError::Unavailable(_)) => {}
                Err(e) => return Err(e.into()),
            },
            Some((value, revision)) => match store.update(&key, &(value + 1), revision).await {
                Ok(revision) => {
                    known = Some((value + 1, revision));
                    writes.at.push(Instant::now());
                    writes.last = value + 1;
                    writes.revision = revision;
                    confirmed = true;
                }
                Err(StoreError::Unavailable(_) | StoreError::Conflict { .. }) => {
                    known = None;
                    confirmed = false;
                }
                Err(e) => return Err(e.into()),
            },
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(writes)
}

/// One increment of the counter at `key`, tried again while refused, for
/// up to `within`: the new value and its revision.
async fn write_once(store: Store, key: String, within: Duration) -> Result<(u64, i64)> {
    let stop = Arc::new(AtomicBool::new(true));
    tokio::time::timeout(within, keep_writing(store, key.clone(), stop))
        .await
        .with_context(|| format!("no write of {key} within {within:?}"))?
        .map(|w| (w.last, w.revision))
}

/// Makes sure the member `store` talks to is not the leader: a leader that
/// is cut off keeps answering its own host's renewals until it sees it
/// has lost its quorum and steps down (etcd 3.4.23 renews on the leader
/// without asking the quorum), so its host's lease outlives the partition
/// by up to that time, which the new leader covers by restarting every
/// lease it takes over with its TTL plus an election timeout (see
/// docs/cluster.md). This test measures a follower cut off, whose
/// renewals stop with the partition.
async fn lead_elsewhere(store: Store) -> Result<()> {
    let mut client = store.client();
    let status = client.status().await?;
    let me = status
        .header()
        .context("a status has a header")?
        .member_id();
    if status.leader() != me {
        return Ok(());
    }
    let members = client.member_list().await?;
    let other = members
        .members()
        .iter()
        .map(|m| m.id())
        .find(|id| *id != me)
        .context("another member")?;
    client.move_leader(other).await?;
    Ok(())
}

/// Case `partition`: returns the last value A and B each confirmed.
fn partition_fences_the_cut_off_host(cl: &Cluster) -> Result<[u64; 2]> {
    let (a, b, c) = (&cl.hosts[A], &cl.hosts[B], &cl.hosts[C]);
    c.with_store(lead_elsewhere)
        .context("C's member hands the lead over")?;
    // What C knows of its lease at the partition comes from its keeper's
    // renewals, not from the grant.
    let lease = c.lease.as_ref().expect("C holds a lease").watch();
    c.runtime
        .run(renewed(lease.clone(), 2, TTL * 3))
        .context("C's lease is renewed")?;
    let c_lost = c.runtime.spawn(counted_lost(lease, TTL * 4));
    let alive_c = a.alive_key("c");
    let a_saw_gone = a.spawn_with_store(|s| first_seen_gone(s, alive_c, Duration::from_secs(20)));
    let stop = Arc::new(AtomicBool::new(false));
    let writers = [a, b].map(|h| {
        let (key, stop) = (h.counter_key(h.name), stop.clone());
        h.spawn_with_store(|s| keep_writing(s, key, stop))
    });

    cl.net.partition(C)?;
    let parted = Instant::now();
    let a_saw_gone = a_saw_gone.join().context("A never saw host-alive/c go")?;
    let c_lost = c_lost.join().context("C never counted its lease lost")?;
    eprintln!(
        "after the partition, C's lease was lost at its bound {:?}, reported {:?}; \
         A saw host-alive/c gone {:?}",
        c_lost.bound.saturating_duration_since(parted),
        c_lost.reported - parted,
        a_saw_gone - parted
    );
    // The fencing rule: C counts its lease lost at the bound its last
    // answered renewal gave (its keeper reports it then, one wake-up
    // later), and nobody sees the lease end before that bound.
    ensure!(
        c_lost.bound <= a_saw_gone,
        "fencing broken: A saw host-alive/c gone {:?} before C's lease was counted lost",
        c_lost.bound - a_saw_gone
    );
    ensure!(
        c_lost.reported <= parted + TTL + Duration::from_secs(1),
        "C counted its lease lost {:?} after the partition, later than TTL + 1 s",
        c_lost.reported - parted
    );

    // Cut off, C's own store cannot answer.
    let alive_c = c.alive_key("c");
    let read = c.with_store(|s| async move { s.get::<String>(&alive_c).await });
    ensure!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");

    stop.store(true, Ordering::Relaxed);
    let mut last = [0; 2];
    for (i, writer) in writers.into_iter().enumerate() {
        let writes = writer.join()?;
        let during = writes.at.iter().filter(|t| **t > parted).count();
        ensure!(
            during >= 3,
            "{} wrote {during} times during the partition",
            NAMES[i]
        );
        last[i] = writes.last;
    }
    Ok(last)
}

/// Case `heal`: C answers again, is alive under a new lease, and reads
/// what A and B confirmed while it was cut off.
fn heal_brings_the_host_back_whole(cl: &mut Cluster, written: [u64; 2]) -> Result<()> {
    cl.net.heal(C)?;
    let c = &mut cl.hosts[C];
    let alive_c = c.alive_key("c");
    c.with_store(|s| async move {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            match s.get::<String>(&alive_c).await {
                Ok(_) => return Ok(()),
                Err(StoreError::Unavailable(_)) if Instant::now() < until => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e).context("C's store after healing"),
            }
        }
    })?;
    // A lost lease is never used again: C grants a new one.
    c.announce()?;
    ensure!(matches!(
        c.lease.as_ref().map(Lease::state),
        Some(LeaseState::Held { .. })
    ));

    let alive_c = c.alive_key("c");
    let seen = cl.hosts[A].with_store(|s| async move { s.get::<String>(&alive_c).await })?;
    ensure!(
        seen.map(|r| r.value).as_deref() == Some("c"),
        "A sees C alive again"
    );
    for (i, wrote) in written.into_iter().enumerate() {
        let key = cl.hosts[C].counter_key(NAMES[i]);
        let read = cl.hosts[C].with_store(|s| async move { s.get::<u64>(&key).await })?;
        ensure!(
            read.as_ref().map(|r| r.value) == Some(wrote),
            "C reads {read:?} of {}'s counter, which confirmed {wrote}",
            NAMES[i]
        );
    }
    Ok(())
}

/// Case `quorum`: two of three members write; one alone says it cannot,
/// within 10 s; with the quorum back, writes resume.
fn the_store_needs_a_quorum_and_says_so(cl: &mut Cluster) -> Result<()> {
    let write = |host: &Host, within| {
        let key = host.counter_key(host.name);
        host.with_store(|s| write_once(s, key, within))
            .with_context(|| format!("a write from {}", host.name))
    };
    cl.hosts[A].kill_member();
    write(&cl.hosts[B], Duration::from_secs(15))?;
    let (value, revision) = write(&cl.hosts[C], Duration::from_secs(15))?;

    cl.hosts[B].kill_member();
    let c = &cl.hosts[C];
    let key = c.counter_key("c");
    let (refused, took) = c.with_store(|s| async move {
        let started = Instant::now();
        let write = s.update(&key, &(value + 1), revision).await;
        (write, started.elapsed())
    });
    ensure!(
        matches!(refused, Err(StoreError::Unavailable(_))),
        "one member of three wrote: {refused:?}"
    );
    ensure!(took < Duration::from_secs(10), "refused after {took:?}");

    for i in [A, B] {
        cl.hosts[i].start_member()?;
    }
    for i in [C, A] {
        write(&cl.hosts[i], Duration::from_secs(30))?;
    }
    Ok(())
}

#[test]
fn a_partitioned_host_is_fenced_and_comes_back_whole() -> Result<()> {
    let mut cl = case("start", start_cluster)?;
    let written = case("partition", || partition_fences_the_cut_off_host(&cl))?;
    case("heal", || heal_brings_the_host_back_whole(&mut cl, written))?;
    case("quorum", || the_store_needs_a_quorum_and_says_so(&mut cl))?;
    for host in &mut cl.hosts {
        if let Some(member) = host.member.take() {
            host.runtime.run(member.stop());
        }
    }
    Ok(())
}
