//! Traffic shaping holds a port to its average rate (DPDK's testpmd).
//!
//! Traffic shaping holds a port to its average rate, with DPDK's testpmd
//! as the clients: a sender testpmd (`txonly`, 1500-byte frames, as fast
//! as it can) and a receiver testpmd (`rxonly`), each with one
//! `net_virtio_user` port. Shaping is 20 Mbit/s average, 40 Mbit/s peak,
//! 256 KiB burst:
//! - ingress (from the VM into the switch) on the sender's port group: the
//!   switch leaves what is over the rate in the sender's ring;
//! - egress (from the switch to the VM) on the receiver's port group: a
//!   unicast frame over the receiver's rate also stays in the sender's
//!   ring (the switch drops only flooded frames over the rate).
//!
//! The delivered rate is the receiver's byte counter over a 10 s window
//! (counters read at its start and end, after the burst allowance is
//! spent) and must be within 10% of the average, while the sender offers
//! more: its ring is full. Up to three windows are measured; one within
//! bounds passes (see `shaped_rate` for why the switch's worker may miss
//! its pace on a busy machine).
//!
//! The rate is 20 Mbit/s because everything shares two CPUs with a debug
//! build of the switch, two busy-polling testpmds and whatever else the
//! machine runs: at 100 Mbit/s the test passes on an idle machine but a
//! starved worker could not even take 100 Mbit/s from the sender beside a
//! TCG guest. What is tested is the shaper's accuracy, not the switch's
//! speed (that is bench-net's job).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use harness::daemons::vswitchd::Vswitchd;
use harness::hugepages::Hugepages;
use harness::peers::testpmd::{Testpmd, Vdev};
use harness::testdir::TestDir;
use harness::wait::wait_until;
use serde_json::{Value, json};

const AVERAGE_BPS: u64 = 20_000_000;
const BURST_BYTES: u64 = 256 * 1024;
const WINDOW: Duration = Duration::from_secs(10);
const FRAME: u32 = 1500;
const SENDER_MAC: &str = "02:00:00:00:5a:01";
const RECEIVER_MAC: &str = "02:00:00:00:5a:02";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Shaping on the sender's port, as traffic enters the switch.
    Ingress,
    /// Shaping on the receiver's port, as traffic leaves the switch.
    Egress,
}

/// Frames testpmd's forwarding engine could not hand to its port because
/// the port's ring was full.
fn refused(t: &mut Testpmd) -> Result<u64> {
    let text = t.command("show fwd stats all")?;
    text.split("TX-dropped:")
        .nth(1)
        .and_then(|after| after.split_whitespace().next()?.parse().ok())
        .context("TX-dropped in testpmd's fwd stats")
}

/// Gives every thread process `pid` has now (its forwarding worker among
/// them) nice value `nice`.
fn raise_priority(pid: u32, nice: i32) -> Result<()> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let tid: libc::id_t = task?.file_name().to_string_lossy().parse()?;
        // SAFETY: setpriority(2) takes plain integers.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
        let e = std::io::Error::last_os_error();
        // A thread that ended meanwhile needs no priority.
        ensure!(
            rc == 0 || e.raw_os_error() == Some(libc::ESRCH),
            "setpriority({tid}): {e}"
        );
    }
    Ok(())
}

/// A byte counter sample and when it was taken.
fn sample(t: &mut Testpmd, rx: bool) -> Result<(Instant, u64)> {
    let stats = t.port_stats(0)?;
    let at = Instant::now();
    Ok((at, if rx { stats.rx_bytes } else { stats.tx_bytes }))
}

fn rate_bps(from: (Instant, u64), to: (Instant, u64)) -> f64 {
    (to.1 - from.1) as f64 * 8.0 / (to.0 - from.0).as_secs_f64()
}

/// The port groups' shaping, sender's then receiver's, for `direction`.
fn shaping(direction: Direction) -> (Value, Value) {
    let rule = json!({ "average_bps": AVERAGE_BPS, "peak_bps": 2 * AVERAGE_BPS,
                       "burst_bytes": BURST_BYTES });
    // For egress, the sender is held to three times the average: far more
    // than the receiver may get, and little enough that the switch's worker
    // is not kept busy dropping frames (it must keep its shaper's pace).
    match direction {
        Direction::Ingress => (json!({ "ingress": rule }), json!({})),
        Direction::Egress => {
            let offer = json!({ "average_bps": 3 * AVERAGE_BPS, "peak_bps": 30 * AVERAGE_BPS,
                                "burst_bytes": BURST_BYTES });
            (json!({ "ingress": offer }), json!({ "egress": rule }))
        }
    }
}

/// The switch with the shaping for `direction`, and the sender sending to
/// the receiver. Fields drop in order: the testpmds before their
/// hugepages, the switch, then the directories.
struct Flow {
    sender: Testpmd,
    receiver: Testpmd,
    _rx_pages: Hugepages,
    _tx_pages: Hugepages,
    sw: Vswitchd,
    _rx_dir: TestDir,
    _dir: TestDir,
}

impl Flow {
    fn start(direction: Direction) -> Result<Self> {
        let dir = TestDir::new("net-shaping")?;
        // Each testpmd has its own hugepage mount, so each its own directory.
        let rx_dir = TestDir::new("net-shaping-rx")?;
        let (tx_shaping, rx_shaping) = shaping(direction);
        let tx_socket = dir.join("sender.sock");
        let rx_socket = dir.join("receiver.sock");
        let mut sw = Vswitchd::new(&dir);
        sw.pin_to(Some(harness::cpus::nth(1)?));
        sw.set_config(json!({
            "port_groups": [
                { "name": "senders", "shaping": tx_shaping },
                { "name": "receivers", "shaping": rx_shaping },
            ],
            "ports": [
                { "name": "sender", "socket": tx_socket, "mac": SENDER_MAC, "port_group": "senders" },
                { "name": "receiver", "socket": rx_socket, "mac": RECEIVER_MAC,
                  "port_group": "receivers" },
            ],
        }))?;
        let vdev = |socket, mac: &str| Vdev::VirtioUser {
            socket,
            queues: 1,
            server: false,
            mac: Some(mac.to_owned()),
        };
        let tx_pages = Hugepages::reserve(&dir, 128)?;
        let rx_pages = Hugepages::reserve(&rx_dir, 128)?;
        // Both testpmds poll on CPU 0; the switch's worker has CPU 1, and goes
        // ahead of the test's other processes (as a dataplane on a CPU of its
        // own would): a shaper keeps its pace only if its worker runs on time.
        // Egress shaping drops what is over the rate when it arrives, so a
        // worker that is off its CPU for milliseconds at a time sees frames in
        // clumps larger than the peak allows, and delivers less than the
        // average.
        let pid = sw.pid().context("the switch's pid")?;
        raise_priority(pid, -10)?;
        let mut receiver = Testpmd::start(
            &rx_dir,
            "receiver",
            &rx_pages,
            &[vdev(rx_socket, RECEIVER_MAC)],
            0,
        )?;
        let mut sender =
            Testpmd::start(&dir, "sender", &tx_pages, &[vdev(tx_socket, SENDER_MAC)], 0)?;

        // The receiver's burst teaches the switch its address; from then on
        // it only receives.
        receiver.command("set fwd rxonly")?;
        receiver.command(&format!("set eth-peer 0 {SENDER_MAC}"))?;
        receiver.command("start tx_first")?;
        sender.command("set fwd txonly")?;
        sender.command(&format!("set eth-peer 0 {RECEIVER_MAC}"))?;
        sender.command(&format!("set txpkts {FRAME}"))?;
        sender.command("start")?;

        Ok(Flow {
            sender,
            receiver,
            _rx_pages: rx_pages,
            _tx_pages: tx_pages,
            sw,
            _rx_dir: rx_dir,
            _dir: dir,
        })
    }
}

/// One measuring window: whether the sender offered more than the switch
/// took and the receiver got the average within 10%, and what it saw.
fn measure_window(flow: &mut Flow, direction: Direction) -> Result<(bool, String)> {
    let average = AVERAGE_BPS as f64;
    let rx_start = sample(&mut flow.receiver, true)?;
    let tx_start = sample(&mut flow.sender, false)?;
    let refused_start = refused(&mut flow.sender)?;
    // The measuring window: its length is measured, not trusted.
    std::thread::sleep(WINDOW);
    let rx_end = sample(&mut flow.receiver, true)?;
    let tx_end = sample(&mut flow.sender, false)?;
    let refused_end = refused(&mut flow.sender)?;
    let delivered = rate_bps(rx_start, rx_end);
    let accepted = rate_bps(tx_start, tx_end);
    let held = refused_end - refused_start;
    let window = format!(
        "{direction:?} shaping at {} Mbit/s: delivered {:.1} Mbit/s, the switch took {:.1} \
         Mbit/s from the sender, and {held} frames did not fit in its ring, over {:.2} s",
        AVERAGE_BPS / 1_000_000,
        delivered / 1e6,
        accepted / 1e6,
        (rx_end.0 - rx_start.0).as_secs_f64()
    );
    eprintln!("{window}");
    // The sender offered more than the shaper let through: its ring
    // was full (testpmd could not hand over every frame). Both
    // directions hold frames in the sender's ring when one sender and
    // one receiver are known.
    let offered_more = held > 0;
    Ok((
        offered_more && (delivered - average).abs() <= average / 10.0,
        window,
    ))
}

fn shaped_rate(direction: Direction) -> Result<()> {
    let mut flow = Flow::start(direction)?;
    let receiver = &mut flow.receiver;
    // The first window starts once the burst allowance is surely spent.
    wait_until(
        "the receiver to get past the burst allowance",
        Duration::from_secs(30),
        || Ok((receiver.port_stats(0)?.rx_bytes > 4 * BURST_BYTES).then_some(())),
    )?;
    let mut windows = Vec::new();
    let mut passed = false;
    // Up to three windows: the switch shares this machine's two CPUs with
    // the testpmds and anything else running, and a worker starved of CPU
    // for milliseconds at a time cannot keep any shaper's pace. One window
    // within bounds shows the shaper holds the rate; a shaper that is off
    // is off in every window.
    while windows.len() < 3 && !passed {
        let (ok, window) = measure_window(&mut flow, direction)?;
        windows.push(window);
        passed = ok;
    }
    flow.sender.command("stop")?;
    flow.receiver.command("stop")?;
    ensure!(
        passed,
        "no window within 10% of {} Mbit/s with the sender offering more:\n{}",
        AVERAGE_BPS / 1_000_000,
        windows.join("\n")
    );
    flow.sw.ensure_running()?;
    Ok(())
}

#[test]
fn ingress_shaping_holds_a_sender_to_its_average() -> Result<()> {
    shaped_rate(Direction::Ingress)
}

#[test]
fn egress_shaping_holds_a_receiver_to_its_average() -> Result<()> {
    shaped_rate(Direction::Egress)
}
