//! A second host joins a host's cluster with a join token (sfera host
//! join-token, sfera host join), and the two answer for one inventory.
//!
//! Two mgmtds on this machine, each with its own data directory, daemons
//! and etcd member on loopback: host A serves HTTPS (a join token pins its
//! certificate), host B joins it through the `sfera` CLI and then starts.
//! Bad joins (a malformed token, an unknown secret, a certificate other
//! than the pinned one, a name A holds) are refused and leave B's data
//! directory as it was; the good token then still works, once. B then
//! powers, edits and deletes VMs of A through A's controller.

mod mgmt_client;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use harness::mgmtd::Site;
use harness::scenario::case;
use mgmt_client::{Cred, Mgmtd, poll};
use serde_json::{Value, json};

/// `sfera host join` of the data directory `data` to `url` with `token`
/// as `host`: its exit status and what it printed.
fn join(data: &Path, url: &str, token: &str, host: &str) -> Result<(bool, String)> {
    let file = data.with_extension("token");
    std::fs::write(&file, token)?;
    let out = Command::new(harness::daemons::binary("sfera")?)
        .args([
            "host",
            "join",
            url,
            "--address",
            "127.0.0.1",
            "--host-name",
            host,
        ])
        .arg("--token-file")
        .arg(&file)
        .arg("--data-dir")
        .arg(data)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// A join that must fail with `word` in its message and leave no trace.
fn refused(data: &Path, url: &str, token: &str, host: &str, word: &str) -> Result<()> {
    let (ok, text) = join(data, url, token, host)?;
    ensure!(
        !ok && text.contains(word),
        "join with {token:?} as {host}: wanted a refusal with {word:?}, got: {text}"
    );
    ensure!(
        !data.join("cluster.json").exists() && !data.join("cluster-tls").exists(),
        "a refused join left files in {}",
        data.display()
    );
    Ok(())
}

/// The hosts `m` lists, by name, each with its state.
fn hosts(m: &Mgmtd, token: &str) -> Result<Vec<(String, String)>> {
    let list = m.expect(Cred::Bearer(token), "GET", "/api/v1/hosts", None, 200)?;
    Ok(list["items"]
        .as_array()
        .context("hosts")?
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap_or_default().to_owned(),
                h["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect())
}

#[test]
fn a_second_host_joins_with_a_token() -> Result<()> {
    let a_site = Site::new("join-a")?;
    let b_site = Site::new("join-b")?;
    let a = Mgmtd::start_https(&a_site, true, 1, &["--host-name", "esx-a"])?;
    let a_token = a.admin_token(&a_site.dir.join("cookies"))?;
    let made = a.expect(
        Cred::Bearer(&a_token),
        "POST",
        "/api/v1/cluster/join-tokens",
        Some(&json!({})),
        201,
    )?;
    let token = made["token"].as_str().context("no token")?.to_owned();
    let b_data = b_site.data();
    std::fs::create_dir_all(&b_data)?;
    case("bad_joins_are_refused_and_leave_nothing", || {
        bad_joins_are_refused_and_leave_nothing(&a, &a_token, &b_data, &token)
    })?;
    case("the_token_admits_b_once", || {
        the_token_admits_b_once(&a, &b_data, &token, &a_site.dir.join("third"))
    })?;
    let mut b = Mgmtd::start_with(&b_site, true, 1, &["--host-name", "esx-b"])?;
    // The cluster's admin, made by A: B makes none of its own.
    ensure!(
        !b.data.join("admin-password").exists(),
        "B made an admin of its own"
    );
    let b_token = b.admin_token_with(&b_site.dir.join("cookies"), &a.admin_password()?)?;
    case("both_hosts_list_both_hosts_connected", || {
        both_hosts_list_both_hosts_connected(&a, &a_token, &b, &b_token)
    })?;
    case("a_vm_made_on_a_is_listed_on_b", || {
        a_vm_made_on_a_is_listed_on_b(&a, &a_token, &b, &b_token)
    })?;
    case("b_powers_a_vm_of_a_through_a", || {
        b_powers_a_vm_of_a_through_a(&a, &a_token, &b, &b_token)
    })?;
    case("b_edits_and_deletes_vms_of_a_through_a", || {
        b_edits_and_deletes_vms_of_a_through_a(&a, &a_token, &b, &b_token)
    })?;
    case("a_enters_maintenance_through_b", || {
        a_enters_maintenance_through_b(&a, &a_token, &b, &b_token)
    })?;
    case("users_and_tokens_are_the_clusters", || {
        users_and_tokens_are_the_clusters(&a, &a_token, &b, &b_token, &a_site.dir.join("ops"))
    })?;
    case("b_leaves_and_a_works_alone", || {
        b_leaves_and_a_works_alone(&a, &a_token, &mut b, &b_token)
    })
}

fn bad_joins_are_refused_and_leave_nothing(
    a: &Mgmtd,
    a_token: &str,
    b_data: &Path,
    token: &str,
) -> Result<()> {
    let (secret, pin) = token.split_once('.').context("token shape")?;
    refused(
        b_data,
        &a.base,
        "not-a-token",
        "esx-b",
        "is not <64 hex digits>",
    )?;
    let unknown = format!("{}.{pin}", "0".repeat(64));
    refused(
        b_data,
        &a.base,
        &unknown,
        "esx-b",
        "unknown, used or expired",
    )?;
    let other_pin = format!("{secret}.{}", "1".repeat(64));
    refused(
        b_data,
        &a.base,
        &other_pin,
        "esx-b",
        "is not the one the join token names",
    )?;
    refused(b_data, &a.base, token, "esx-a", "esx-a")?;
    refused(b_data, &a.base, token, "Bad name!", "host name")?;
    let events = a.expect(
        Cred::Bearer(a_token),
        "GET",
        "/api/v1/events?limit=100",
        None,
        200,
    )?;
    ensure!(
        events.to_string().contains("cluster.join_refused"),
        "{events}"
    );
    Ok(())
}

/// The token the refusals did not use up admits B, then no one else.
fn the_token_admits_b_once(a: &Mgmtd, b_data: &Path, token: &str, third: &Path) -> Result<()> {
    let (ok, text) = join(b_data, &a.base, token, "esx-b")?;
    ensure!(ok, "the join failed: {text}");
    let file: Value = serde_json::from_slice(&std::fs::read(b_data.join("cluster.json"))?)?;
    ensure!(
        file["host"] == "esx-b" && file["member"]["new_cluster"] == false,
        "{file}"
    );
    std::fs::create_dir_all(third)?;
    refused(third, &a.base, token, "esx-c", "unknown, used or expired")?;
    let (again, text) = join(b_data, &a.base, token, "esx-b")?;
    ensure!(!again && text.contains("in a cluster already"), "{text}");
    Ok(())
}

fn both_hosts_list_both_hosts_connected(
    a: &Mgmtd,
    a_token: &str,
    b: &Mgmtd,
    b_token: &str,
) -> Result<()> {
    let want = vec![
        ("esx-a".to_owned(), "connected".to_owned()),
        ("esx-b".to_owned(), "connected".to_owned()),
    ];
    for (m, token) in [(a, a_token), (b, b_token)] {
        poll("both hosts connected", Duration::from_secs(30), || {
            Ok((hosts(m, token)? == want).then_some(()))
        })?;
    }
    // B's member votes, and B reaches the store through it too.
    let file: Value = serde_json::from_slice(&std::fs::read(b.data.join("cluster.json"))?)?;
    let own = &file["member"]["client_url"];
    ensure!(
        file["endpoints"]
            .as_array()
            .is_some_and(|e| e.contains(own)),
        "B's own member is not among its endpoints: {file}"
    );
    Ok(())
}

/// One inventory: B lists A's VM on A, and sends its changes to A.
fn a_vm_made_on_a_is_listed_on_b(a: &Mgmtd, a_token: &str, b: &Mgmtd, b_token: &str) -> Result<()> {
    let task = a.expect(
        Cred::Bearer(a_token),
        "POST",
        "/api/v1/vms",
        Some(&json!({ "name": "shared", "template": "tiny-linux", "memory_mib": 128 })),
        202,
    )?;
    a.wait_task(a_token, &task, Duration::from_secs(60))?;
    let seen = b.expect(
        Cred::Bearer(b_token),
        "GET",
        "/api/v1/vms/shared",
        None,
        200,
    )?;
    ensure!(
        seen["host"] == "esx-a" && seen["state"] == "stopped",
        "{seen}"
    );
    let listed = b.expect(Cred::Bearer(b_token), "GET", "/api/v1/vms", None, 200)?;
    ensure!(listed.to_string().contains("\"shared\""), "{listed}");
    Ok(())
}

/// One set of accounts: a token made on B works on A; a user made through
/// B logs in on A; deleting that user through B ends their token and
/// their session on A at once.
fn users_and_tokens_are_the_clusters(
    a: &Mgmtd,
    a_token: &str,
    b: &Mgmtd,
    b_token: &str,
    dir: &Path,
) -> Result<()> {
    let me = a.expect(Cred::Bearer(b_token), "GET", "/api/v1/session", None, 200)?;
    ensure!(me["user"] == "admin", "B's token on A: {me}");
    let password = "correct horse battery staple 7";
    b.expect(
        Cred::Bearer(b_token),
        "POST",
        "/api/v1/users",
        Some(&json!({ "name": "ops", "password": password, "role": "read-only" })),
        201,
    )?;
    let again = a.call(
        Cred::Bearer(a_token),
        "POST",
        "/api/v1/users",
        Some(&json!({ "name": "ops", "password": password, "role": "administrator" })),
    )?;
    ensure!(
        again.status == 409,
        "ops made twice: {} {}",
        again.status,
        again.body
    );
    let users = a.expect(Cred::Bearer(a_token), "GET", "/api/v1/users", None, 200)?;
    ensure!(
        users["items"].as_array().is_some_and(|u| u
            .iter()
            .any(|u| u["name"] == "ops" && u["role"] == "read-only")),
        "A's users: {users}"
    );
    std::fs::create_dir_all(dir)?;
    let jar = dir.join("cookies");
    let login = a.login(&jar, "ops", password)?;
    ensure!(
        login.status == 200,
        "ops on A: {} {}",
        login.status,
        login.body
    );
    let ops_token = a.new_token(&jar)?;
    let listed = b.expect(Cred::Bearer(&ops_token), "GET", "/api/v1/tokens", None, 200)?;
    ensure!(
        listed["items"][0]["name"] == "test",
        "ops's tokens on B: {listed}"
    );
    let denied = b.call(
        Cred::Bearer(&ops_token),
        "POST",
        "/api/v1/users",
        Some(&json!({ "name": "x", "password": password, "role": "administrator" })),
    )?;
    ensure!(
        denied.status == 403,
        "read-only ops made a user: {}",
        denied.status
    );
    b.expect(
        Cred::Bearer(b_token),
        "DELETE",
        "/api/v1/users/ops",
        None,
        204,
    )?;
    for (what, cred) in [
        ("token", Cred::Bearer(&ops_token)),
        ("session", Cred::Cookies(&jar)),
    ] {
        let after = a.call(cred, "GET", "/api/v1/session", None)?;
        ensure!(
            after.status == 401,
            "ops's {what} on A after the user was deleted on B: {}",
            after.status
        );
    }
    Ok(())
}

/// A power request through B for a VM of A: B's task (`kind`) ended, as
/// recorded on B.
fn power_through_b(b: &Mgmtd, b_token: &str, action: &str, kind: &str) -> Result<Value> {
    let task = b.expect(
        Cred::Bearer(b_token),
        "POST",
        &format!("/api/v1/vms/shared/power/{action}"),
        None,
        202,
    )?;
    let done = b.finished_task(b_token, &task, Duration::from_secs(120))?;
    ensure!(done["kind"] == kind, "{done}");
    Ok(done)
}

/// Whether process `pid` runs (a zombie has no command line).
fn alive(pid: u64) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

/// B's API takes power requests for A's VM: A's controller carries them
/// out (A's process runs the VM), B's task reports A's outcome, A's
/// refusal included.
fn b_powers_a_vm_of_a_through_a(a: &Mgmtd, a_token: &str, b: &Mgmtd, b_token: &str) -> Result<()> {
    let on = power_through_b(b, b_token, "on", "vm.power_on")?;
    ensure!(on["state"] == "success", "power-on through B: {on}");
    let running = a.expect(
        Cred::Bearer(a_token),
        "GET",
        "/api/v1/vms/shared",
        None,
        200,
    )?;
    let pid = running["pid"].as_u64().context("no pid on A")?;
    ensure!(
        running["state"] == "running" && on["result"]["pid"] == pid && alive(pid),
        "A after a power-on through B: {running}; B's task: {on}"
    );
    // B counts what A's running VM uses of A.
    let a_seen = b.expect(
        Cred::Bearer(b_token),
        "GET",
        "/api/v1/hosts/esx-a",
        None,
        200,
    )?;
    let usage = &a_seen["usage"];
    ensure!(
        usage["vms_running"] == 1
            && usage["memory_allocated_bytes"] == 128u64 << 20
            && usage["memory_free_bytes"].as_u64()
                == a_seen["facts"]["memory_bytes"]
                    .as_u64()
                    .map(|m| m - (128 << 20)),
        "A's usage as B lists it: {a_seen}"
    );
    let off = power_through_b(b, b_token, "off", "vm.power_off")?;
    ensure!(off["state"] == "success", "power-off through B: {off}");
    ensure!(a.vm_state(a_token, "shared")? == "stopped" && !alive(pid));
    let refused = power_through_b(b, b_token, "pause", "vm.pause")?;
    ensure!(
        refused["state"] == "error"
            && refused["error"]
                .as_str()
                .is_some_and(|e| e.contains("only a running VM can be paused")),
        "a pause of a stopped VM through B: {refused}"
    );
    Ok(())
}

/// Through B, a request for A's VM: B's task, once ended.
fn through_b(
    b: &Mgmtd,
    b_token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value> {
    let task = b.expect(Cred::Bearer(b_token), method, path, body, 202)?;
    b.finished_task(b_token, &task, Duration::from_secs(120))
}

/// B's API takes edits and deletions of A's VMs: what can be checked
/// without A is refused at once by B (bad fields, a stale version, a
/// running VM's deletion); A plans and carries out the rest, as a task of
/// its own too, and its refusal is B's task's error.
fn b_edits_and_deletes_vms_of_a_through_a(
    a: &Mgmtd,
    a_token: &str,
    b: &Mgmtd,
    b_token: &str,
) -> Result<()> {
    let before = a.expect(
        Cred::Bearer(a_token),
        "GET",
        "/api/v1/vms/shared",
        None,
        200,
    )?;
    let at_once: [(Value, u16, &str); 3] = [
        (json!({ "vcpus": 0 }), 400, "vcpus"),
        (json!({ "memory_mib": 1 << 30 }), 400, "memory"),
        (
            json!({ "memory_mib": 256, "resource_version": before["resource_version"].as_i64().unwrap_or(0) - 1 }),
            409,
            "changed",
        ),
    ];
    for (body, status, word) in at_once {
        answers(
            b,
            b_token,
            ("PATCH", "/api/v1/vms/shared", Some(&body)),
            status,
            word,
        )?;
    }
    let edit = json!({ "memory_mib": 192, "resource_version": before["resource_version"] });
    let done = through_b(b, b_token, "PATCH", "/api/v1/vms/shared", Some(&edit))?;
    ensure!(
        done["state"] == "success" && done["kind"] == "vm.edit",
        "edit through B: {done}"
    );
    let after = a.expect(
        Cred::Bearer(a_token),
        "GET",
        "/api/v1/vms/shared",
        None,
        200,
    )?;
    ensure!(
        after["memory_mib"] == 192 && after["resource_version"] != before["resource_version"],
        "A after an edit through B: {after}"
    );
    let a_tasks = a.expect(
        Cred::Bearer(a_token),
        "GET",
        "/api/v1/tasks?limit=50",
        None,
        200,
    )?;
    ensure!(
        a_tasks.to_string().contains("admin (through esx-b)"),
        "A's own task for the edit: {a_tasks}"
    );
    // Planned on A: a datastore A does not have is A's refusal.
    let bad = json!({ "add_disks": [{ "datastore": "nope", "size_bytes": 1 << 20 }] });
    let refused = through_b(b, b_token, "PATCH", "/api/v1/vms/shared", Some(&bad))?;
    ensure!(
        refused["state"] == "error"
            && refused["error"]
                .as_str()
                .is_some_and(|e| e.contains("does not exist")),
        "an edit A refuses, through B: {refused}"
    );
    // A VM with a disk, deleted through B with its disk.
    let task = a.expect(
        Cred::Bearer(a_token),
        "POST",
        "/api/v1/vms",
        Some(
            &json!({ "name": "doomed", "template": "tiny-linux", "memory_mib": 128,
                      "disks": [{ "datastore": "local", "size_bytes": 1 << 20 }] }),
        ),
        202,
    )?;
    a.wait_task(a_token, &task, Duration::from_secs(60))?;
    let volumes = || -> Result<String> {
        Ok(a.expect(
            Cred::Bearer(a_token),
            "GET",
            "/api/v1/datastores/local/volumes",
            None,
            200,
        )?
        .to_string())
    };
    ensure!(
        volumes()?.contains("doomed/disk0"),
        "the VM's volume: {}",
        volumes()?
    );
    let bad = ("DELETE", "/api/v1/vms/doomed?disks=maybe", None);
    answers(b, b_token, bad, 400, "disks must be true or false")?;
    let gone = through_b(b, b_token, "DELETE", "/api/v1/vms/doomed?disks=true", None)?;
    ensure!(
        gone["state"] == "success"
            && gone["result"]["deleted"] == true
            && gone["result"]["disks_deleted"] == true,
        "deletion through B: {gone}"
    );
    answers(
        a,
        a_token,
        ("GET", "/api/v1/vms/doomed", None),
        404,
        "doomed",
    )?;
    ensure!(
        !volumes()?.contains("doomed/disk0"),
        "its volume stays: {}",
        volumes()?
    );
    Ok(())
}

/// `m` answers `method path` (with `body`) with `status` and a body that
/// says `word`.
fn answers(
    m: &Mgmtd,
    token: &str,
    (method, path, body): (&str, &str, Option<&Value>),
    status: u16,
    word: &str,
) -> Result<()> {
    let r = m.call(Cred::Bearer(token), method, path, body)?;
    ensure!(
        r.status == status && r.body.to_string().contains(word),
        "{method} {path} {}: {} {}",
        body.map(Value::to_string).unwrap_or_default(),
        r.status,
        r.body
    );
    Ok(())
}

/// Maintenance mode of A, set through B: refused while A runs a VM;
/// then A is listed in maintenance by both, no VM of A powers on (refused
/// by B at once) and none is made on A; `sfera host maintenance exit` on A
/// takes it out.
fn a_enters_maintenance_through_b(
    a: &Mgmtd,
    a_token: &str,
    b: &Mgmtd,
    b_token: &str,
) -> Result<()> {
    let enter = |m: &Mgmtd, token: &str| {
        m.call(
            Cred::Bearer(token),
            "PUT",
            "/api/v1/hosts/esx-a/maintenance",
            None,
        )
    };
    let on = power_through_b(b, b_token, "on", "vm.power_on")?;
    ensure!(on["state"] == "success", "{on}");
    let r = enter(b, b_token)?;
    ensure!(
        r.status == 409 && r.body.to_string().contains("runs 1 VM(s) (shared)"),
        "entering while a VM runs: {} {}",
        r.status,
        r.body
    );
    ensure!(hosts(a, a_token)?.contains(&("esx-a".into(), "connected".into())));
    let off = power_through_b(b, b_token, "off", "vm.power_off")?;
    ensure!(off["state"] == "success", "{off}");
    for _ in 0..2 {
        // A second time changes nothing.
        let r = enter(b, b_token)?;
        ensure!(
            r.status == 200
                && r.body["state"] == "maintenance"
                && r.body["maintenance"]["by"] == "admin",
            "entering: {} {}",
            r.status,
            r.body
        );
    }
    for (m, token) in [(a, a_token), (b, b_token)] {
        ensure!(
            hosts(m, token)?.contains(&("esx-a".into(), "maintenance".into())),
            "{:?}",
            hosts(m, token)?
        );
    }
    let power_on = ("POST", "/api/v1/vms/shared/power/on", None);
    answers(b, b_token, power_on, 409, "is in maintenance mode")?;
    let new_vm = json!({ "name": "refused", "template": "tiny-linux", "memory_mib": 128 });
    let create = ("POST", "/api/v1/vms", Some(&new_vm));
    answers(a, a_token, create, 409, "a new VM is refused")?;
    let unknown = ("PUT", "/api/v1/hosts/esx-z/maintenance", None);
    answers(b, b_token, unknown, 404, "esx-z")?;
    let said = a.cli(a_token, &["--json", "host", "maintenance", "exit", "esx-a"])?;
    ensure!(
        serde_json::from_str::<Value>(&said)?["state"] == "connected",
        "sfera host maintenance exit: {said}"
    );
    let events = b.expect(
        Cred::Bearer(b_token),
        "GET",
        "/api/v1/events?limit=100",
        None,
        200,
    )?;
    ensure!(
        events.to_string().contains("host.maintenance_entered"),
        "B's events: {events}"
    );
    Ok(())
}

/// A host leaves: refused for a host with VMs and for the host answering;
/// B removed through A (`sfera host remove`) is gone from A's list, stays gone, and A alone is
/// a quorum: with B's mgmtd and member stopped, A still writes.
fn b_leaves_and_a_works_alone(
    a: &Mgmtd,
    a_token: &str,
    b: &mut Mgmtd,
    b_token: &str,
) -> Result<()> {
    let refusals: [(&Mgmtd, &str, &str, u16, &str); 3] = [
        (b, b_token, "esx-b", 409, "is the host answering"),
        (b, b_token, "esx-a", 409, "has 1 VM(s) (shared)"),
        (a, a_token, "esx-z", 404, "esx-z"),
    ];
    for (m, token, host, status, word) in refusals {
        let path = format!("/api/v1/hosts/{host}");
        answers(m, token, ("DELETE", &path, None), status, word)?;
    }
    let said = a.cli(a_token, &["--json", "host", "remove", "esx-b"])?;
    ensure!(
        serde_json::from_str::<Value>(&said)?["removed"] == "esx-b",
        "sfera host remove: {said}"
    );
    let only_a = vec![("esx-a".to_owned(), "connected".to_owned())];
    ensure!(hosts(a, a_token)? == only_a, "A's hosts after the removal");
    // B's mgmtd still runs: its lease is gone, and when it goes for a new
    // one it finds itself removed and stops, without writing itself back.
    // B's API may answer 503 meanwhile: its own etcd member is gone, and
    // a request that goes there fails before its client tries A's.
    poll("B to see it was removed", Duration::from_secs(30), || {
        let events = b.call(
            Cred::Bearer(b_token),
            "GET",
            "/api/v1/events?limit=100",
            None,
        )?;
        Ok(
            (events.status == 200 && events.body.to_string().contains("host.removed"))
                .then_some(()),
        )
    })?;
    ensure!(hosts(a, a_token)? == only_a, "B came back");
    drop(b.process.take());
    a.expect(
        Cred::Bearer(a_token),
        "POST",
        "/api/v1/users",
        Some(&json!({ "name": "after-b", "password": "correct horse battery staple 8", "role": "read-only" })),
        201,
    )?;
    Ok(())
}
