//! A bad guest on one port hurts neither the switch nor other ports (raw frontend, testpmd).
//!
//! A misbehaving guest on one port cannot hurt the switch or the other
//! ports. A raw vhost-user frontend writes what no driver would: transmit
//! chains that loop, point past the ring or outside guest memory, have the
//! wrong direction or are indirect without the feature; runt and oversize
//! frames; an available index far ahead of the ring; receive buffers that
//! are read-only, too small or outside memory; and in the end it stops
//! taking its receive queue. Meanwhile two testpmd ports in VLAN 10 keep
//! broadcasting to each other through the switch, which floods every frame
//! to the bad port too (a trunk of VLANs 10 and 20). After each step their
//! counters must keep growing, the daemon must still run, and (while its
//! transmit ring is intact) a valid frame the bad port sends in VLAN 20
//! must reach a well-behaved witness port there, alone. In the end every
//! refusal must have been counted on the bad port, per reason.
//!
//! A second case races the switch: a guest whose second vCPU flips the
//! source address of the frame it keeps sending between the port's own
//! and a forged one, while the switch checks and delivers it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use harness::daemons::vswitchd::Vswitchd;
use harness::frames::{self, BROADCAST, Mac};
use harness::hugepages::Hugepages;
use harness::peers::testpmd::{Testpmd, Vdev};
use harness::raw_frontend::{BUFFERS, Desc, F_NEXT, F_WRITE, QUEUE_SIZE};
use harness::raw_nic::{HDR, RX, RawNic, TX, TX_AT};
use harness::scenario::case;
use harness::testdir::TestDir;
use harness::wait::wait_until;
use serde_json::json;

const BAD: Mac = [2, 0, 0, 0, 0xba, 0xd0];
const WITNESS: Mac = [2, 0, 0, 0, 0x77, 0x01];
const PMD: [&str; 2] = ["02:00:00:00:00:01", "02:00:00:00:00:02"];
/// Where the bad guest's hand-written buffers go (after RawNic's).
const SCRATCH: u64 = BUFFERS + 0x40000;
const F_INDIRECT: u16 = 4;

/// Waits until both testpmd ports have received `more` frames beyond
/// what they had.
fn keeps_flowing(t: &mut Testpmd, more: u64, after: &str) -> Result<()> {
    let start = [t.port_stats(0)?.rx_packets, t.port_stats(1)?.rx_packets];
    wait_until(
        &format!("testpmd's traffic after {after}"),
        Duration::from_secs(20),
        || {
            let now = [t.port_stats(0)?.rx_packets, t.port_stats(1)?.rx_packets];
            Ok((now[0] >= start[0] + more && now[1] >= start[1] + more).then_some(()))
        },
    )?;
    Ok(())
}

/// Sends a valid broadcast in VLAN 20 from `bad`; `witness` must get it
/// (untagged), and nothing before it.
fn still_forwards(bad: &mut RawNic, witness: &mut RawNic, seed: u8) -> Result<()> {
    bad.send(&frames::patterned(BROADCAST, BAD, Some(20), 80, seed))?;
    let marker = frames::patterned(BROADCAST, BAD, None, 80, seed);
    let (before, _) = witness
        .receive_until(Duration::from_secs(10), |f| f == marker)
        .with_context(|| format!("the bad port's frame {seed} at the witness"))?;
    ensure!(
        before.is_empty(),
        "the witness got {} other frames: {before:02x?}",
        before.len()
    );
    Ok(())
}

/// Writes `descs` at indices `0..` of the bad port's transmit queue and
/// offers the chain at `head`; the switch must hand it back.
fn bad_tx_chain(bad: &mut RawNic, descs: &[Desc], head: u16) -> Result<()> {
    for (i, d) in descs.iter().enumerate() {
        bad.frontend().set_desc_q(TX, i as u16, *d);
    }
    bad.offer_tx(head)
        .context("the switch did not hand a bad chain back")?;
    Ok(())
}

fn desc(addr: u64, len: u32, flags: u16, next: u16) -> Desc {
    Desc {
        addr,
        len,
        flags,
        next,
    }
}

/// The scenario's set-up: the switch, a testpmd whose two ports in VLAN 10
/// keep broadcasts circulating through it, and a well-behaved witness in
/// VLAN 20. Fields drop in order: the witness and testpmd, the hugepages,
/// the switch, the directory.
struct Site {
    witness: RawNic,
    t: Testpmd,
    _hugepages: Hugepages,
    sw: Vswitchd,
    /// The switch's process, which must never change.
    pid: Option<u32>,
    dir: TestDir,
}

impl Site {
    fn start() -> Result<Self> {
        let dir = TestDir::new("net-bad-guest")?;
        let socket = |name: &str| dir.join(format!("{name}.sock"));
        let mut sw = Vswitchd::new(&dir);
        sw.enable_api();
        sw.set_config(json!({
            "port_groups": [
                { "name": "v10", "vlan": { "mode": "access", "id": 10 } },
                { "name": "v20", "vlan": { "mode": "access", "id": 20 } },
                { "name": "trunk", "vlan": { "mode": "trunk", "allowed": [10, 20] } },
            ],
            "ports": [
                { "name": "pmd0", "socket": socket("pmd0"), "mac": PMD[0], "port_group": "v10" },
                { "name": "pmd1", "socket": socket("pmd1"), "mac": PMD[1], "port_group": "v10" },
                { "name": "bad", "socket": socket("bad"), "mac": frames::mac_text(BAD),
                  "port_group": "trunk" },
                { "name": "witness", "socket": socket("witness"), "mac": frames::mac_text(WITNESS),
                  "port_group": "v20" },
            ],
        }))?;
        let pid = sw.pid();
        let hugepages = Hugepages::reserve(&dir, 128)?;
        let vdevs: Vec<Vdev> = PMD
            .iter()
            .enumerate()
            .map(|(i, mac)| Vdev::VirtioUser {
                socket: socket(&format!("pmd{i}")),
                queues: 1,
                server: false,
                mac: Some((*mac).to_owned()),
            })
            .collect();
        let mut t = Testpmd::start(&dir, "testpmd", &hugepages, &vdevs, 0)?;
        // io forwarding sends what port 0 receives out of port 1 and back:
        // the first bursts of broadcasts circulate for the whole test, and the
        // switch floods each pass to the bad port too.
        t.command("set fwd io")?;
        t.command("set eth-peer 0 ff:ff:ff:ff:ff:ff")?;
        t.command("set eth-peer 1 ff:ff:ff:ff:ff:ff")?;
        t.command("start tx_first")?;
        keeps_flowing(&mut t, 1000, "the start")?;
        let witness = RawNic::connect(&socket("witness"), WITNESS)?;
        Ok(Site {
            witness,
            t,
            _hugepages: hugepages,
            sw,
            pid,
            dir,
        })
    }

    fn socket(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.sock"))
    }
}

#[test]
fn a_bad_guest_hurts_neither_the_switch_nor_other_ports() -> Result<()> {
    let mut site = Site::start()?;
    // The bad guest offers no receive buffers yet.
    let mut bad = RawNic::connect_with_buffers(&site.socket("bad"), BAD, 0)?;
    still_forwards(&mut bad, &mut site.witness, 1)?;
    case("bad_transmit_chains_are_handed_back", || {
        bad_transmit_chains_are_handed_back(&mut site, &mut bad)
    })?;
    case("runts_and_oversize_frames_are_dropped", || {
        runts_and_oversize_frames_are_dropped(&mut site, &mut bad)
    })?;
    let used = case("bad_receive_buffers_are_handed_back_empty", || {
        bad_receive_buffers_are_handed_back_empty(&mut site, &mut bad)
    })?;
    case("a_guest_that_stops_receiving_stops_no_one_else", || {
        a_guest_that_stops_receiving_stops_no_one_else(&mut site, &mut bad, used)
    })?;
    case("an_available_index_far_ahead_stops_only_its_ring", || {
        let ahead = bad.frontend().used_idx_q(TX).wrapping_add(1000);
        bad.frontend().set_avail_idx_q(TX, ahead)?;
        keeps_flowing(&mut site.t, 1000, "an available index far ahead")?;
        site.sw.ensure_running()?;
        Ok(())
    })?;
    case("a_well_behaved_guest_takes_the_bad_port", || {
        // The bad guest goes away first.
        drop(bad);
        let mut again = RawNic::connect(&site.socket("bad"), BAD)?;
        still_forwards(&mut again, &mut site.witness, 50).context("a new guest on the bad port")?;
        keeps_flowing(&mut site.t, 1000, "the bad guest's replacement")?;
        site.t.command("stop")?;
        site.sw.ensure_running()?;
        ensure!(site.sw.pid() == site.pid, "the switch was restarted");
        Ok(())
    })?;
    case("every_refusal_is_counted_per_reason", || {
        every_refusal_is_counted_per_reason(&site)
    })
}

/// Transmit chains the switch must refuse and hand back: descriptors at
/// 0.., the head offered.
fn bad_transmit_chains(len: u32) -> [(&'static str, Vec<Desc>, u16); 8] {
    [
        (
            "a chain that loops",
            vec![
                desc(SCRATCH, 20, F_NEXT, 1),
                desc(SCRATCH + 20, len - 20, F_NEXT, 0),
            ],
            0,
        ),
        (
            "a next index past the ring",
            vec![desc(SCRATCH, 20, F_NEXT, 200)],
            0,
        ),
        (
            "a head index past the ring",
            vec![desc(SCRATCH, len, 0, 0)],
            QUEUE_SIZE + 3,
        ),
        (
            "a device-writable transmit buffer",
            vec![desc(SCRATCH, len, F_WRITE, 0)],
            0,
        ),
        (
            "a buffer outside guest memory",
            vec![desc(64 << 30, len, 0, 0)],
            0,
        ),
        (
            "a buffer straddling the end of guest memory",
            vec![desc(harness::raw_frontend::MEM_SIZE - 16, len, 0, 0)],
            0,
        ),
        (
            "an indirect descriptor (not negotiated)",
            vec![desc(SCRATCH, 16, F_INDIRECT, 0)],
            0,
        ),
        (
            "a chain shorter than the virtio-net header",
            vec![desc(SCRATCH, 8, 0, 0)],
            0,
        ),
    ]
}

fn bad_transmit_chains_are_handed_back(s: &mut Site, bad: &mut RawNic) -> Result<()> {
    let frame = {
        let mut f = vec![0u8; HDR];
        f.extend(frames::patterned(BROADCAST, BAD, Some(20), 60, 9));
        f
    };
    bad.frontend().write(SCRATCH, &frame);
    let len = frame.len() as u32;
    let cases = bad_transmit_chains(len);
    for (i, (what, descs, head)) in cases.iter().enumerate() {
        bad_tx_chain(bad, descs, *head).with_context(|| what.to_string())?;
        keeps_flowing(&mut s.t, 500, what)?;
        s.sw.ensure_running()?;
        still_forwards(bad, &mut s.witness, 10 + i as u8).with_context(|| what.to_string())?;
    }

    Ok(())
}

/// Frames the switch must drop: runts and frames over the port's MTU.
fn runts_and_oversize_frames_are_dropped(s: &mut Site, bad: &mut RawNic) -> Result<()> {
    let mut runt = frames::patterned(BROADCAST, BAD, Some(20), 0, 0);
    runt.truncate(16);
    for (what, f) in [
        ("a 3-byte runt", vec![1, 2, 3]),
        ("a 13-byte runt", vec![0xff; 13]),
        ("a tagged frame cut inside its header", runt),
        (
            "a frame over the MTU",
            frames::patterned(BROADCAST, BAD, Some(20), 1600, 3),
        ),
        (
            "a 9000-byte jumbo frame",
            frames::patterned(BROADCAST, BAD, Some(20), 9000, 4),
        ),
        (
            "a 64 KiB frame",
            frames::patterned(BROADCAST, BAD, Some(20), 65536, 5),
        ),
    ] {
        bad.send(&f).with_context(|| what.to_owned())?;
        keeps_flowing(&mut s.t, 500, what)?;
        s.sw.ensure_running()?;
    }
    // None of them reached the witness: the next frame it gets is this.
    still_forwards(bad, &mut s.witness, 30)?;

    Ok(())
}

/// Receive buffers the switch must refuse (and hand back empty) while it
/// floods testpmd's traffic to the bad port; the receive ring's used index
/// after them.
fn bad_receive_buffers_are_handed_back_empty(s: &mut Site, bad: &mut RawNic) -> Result<u16> {
    // Each case is descriptors at 0.. and the heads offered.
    let rx_cases: [(&str, Vec<Desc>, Vec<u16>); 4] = [
        (
            "a read-only receive buffer",
            vec![desc(SCRATCH + 0x1000, 2048, 0, 0)],
            vec![0],
        ),
        (
            "a receive buffer outside guest memory",
            vec![desc(1 << 40, 2048, F_WRITE, 0)],
            vec![0],
        ),
        // With mergeable buffers a frame may take several: a lone small
        // buffer just waits for more; with a second one the frame fits,
        // and the header does not fit the first.
        (
            "a first receive buffer smaller than the header",
            vec![
                desc(SCRATCH + 0x1000, 4, F_WRITE, 0),
                desc(SCRATCH + 0x2000, 2048, F_WRITE, 0),
            ],
            vec![0, 1],
        ),
        (
            "a receive chain that loops",
            vec![
                desc(SCRATCH + 0x1000, 6, F_WRITE | F_NEXT, 1),
                desc(SCRATCH + 0x2000, 6, F_WRITE | F_NEXT, 0),
            ],
            vec![0],
        ),
    ];
    let mut used = bad.frontend().used_idx_q(RX);
    for (what, descs, heads) in &rx_cases {
        for (i, d) in descs.iter().enumerate() {
            bad.frontend().set_desc_q(RX, i as u16, *d);
        }
        for &head in heads {
            bad.frontend().offer_q(RX, head)?;
        }
        let first = used;
        used = used.wrapping_add(heads.len() as u16);
        bad.frontend()
            .wait_used_q(RX, used, Duration::from_secs(10))
            .with_context(|| format!("the switch did not hand back {what}"))?;
        for (n, &head) in heads.iter().enumerate() {
            let (id, written) = bad.frontend().used_elem_q(RX, first.wrapping_add(n as u16));
            ensure!(
                id == u32::from(head) && written == 0,
                "{what}: used ({id}, {written} bytes)"
            );
        }
        keeps_flowing(&mut s.t, 500, what)?;
        s.sw.ensure_running()?;
    }

    Ok(used)
}

/// A guest that stops taking its receive queue: its last buffers fill and
/// stay full; the flood goes on to everyone else.
fn a_guest_that_stops_receiving_stops_no_one_else(
    s: &mut Site,
    bad: &mut RawNic,
    mut used: u16,
) -> Result<()> {
    for i in 0..4u16 {
        let d = desc(SCRATCH + 0x4000 + u64::from(i) * 2048, 2048, F_WRITE, 0);
        bad.frontend().set_desc_q(RX, i, d);
        bad.frontend().offer_q(RX, i)?;
    }
    used = used.wrapping_add(4);
    bad.frontend()
        .wait_used_q(RX, used, Duration::from_secs(10))
        .context("the bad guest's last receive buffers")?;
    for round in 0..3 {
        keeps_flowing(
            &mut s.t,
            1000,
            &format!("the bad guest stopped receiving ({round})"),
        )?;
    }
    ensure!(
        bad.frontend().used_idx_q(RX) == used,
        "the switch used buffers it was not given"
    );
    still_forwards(bad, &mut s.witness, 40)?;

    Ok(())
}

fn every_refusal_is_counted_per_reason(s: &Site) -> Result<()> {
    // Every refusal was counted, per reason, on the bad guest's port.
    let stats = s.sw.stats()?;
    let bad_port = stats["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["name"] == "bad"))
        .with_context(|| format!("no port 'bad' in {stats}"))?;
    for reason in [
        "bad_tx_chain",
        "runt",
        "oversize",
        "bad_rx_buffer",
        "no_rx_buffer",
    ] {
        let n = bad_port["drops"][reason].as_u64().unwrap_or(0);
        ensure!(
            n > 0,
            "no {reason} drops counted on the bad port: {bad_port}"
        );
    }
    Ok(())
}

/// Frames port `port` dropped for `reason`, from the switch's stats.
fn port_drops(sw: &Vswitchd, port: &str, reason: &str) -> Result<u64> {
    let stats = sw.stats()?;
    let entry = stats["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["name"] == port))
        .with_context(|| format!("no port {port:?} in {stats}"))?;
    entry["drops"][reason]
        .as_u64()
        .with_context(|| format!("no {reason} drops in {entry}"))
}

const RACER: Mac = [2, 0, 0, 0, 0x0a, 0x01];
/// Differs from RACER in two bytes: a read during a flip may see a mix.
const FORGED: Mac = [2, 0, 0, 0, 0xf0, 0x0f];
const LISTENER: Mac = [2, 0, 0, 0, 0x0b, 0x01];
/// The racing sender stops after this long or this many frames.
const RACE_TIME: Duration = Duration::from_secs(2);
const RACE_FRAMES: u64 = 500_000;

/// What the listener received from the racing sender.
#[derive(Debug, Default)]
struct Seen {
    /// The frame as sent, from the port's own address.
    own: u64,
    /// From the forged address.
    forged: u64,
    /// From a mix of both.
    torn: u64,
    /// Anything else (a frame the switch changed elsewhere).
    other: u64,
}

impl Seen {
    fn count(&mut self, got: &[u8], sent: &[u8]) {
        let src = frames::parse(got).map(|p| p.src);
        if got == sent {
            self.own += 1;
        } else if got.len() != sent.len() || got[..6] != sent[..6] || got[12..] != sent[12..] {
            self.other += 1;
        } else if src == Some(FORGED) {
            self.forged += 1;
        } else {
            self.torn += 1;
        }
    }
}

/// Keeps the racer's whole transmit ring offered, every chain the same
/// buffer, for [`RACE_TIME`] or [`RACE_FRAMES`], while taking what the
/// listener receives; returns the frames sent and what was seen.
fn race(racer: &mut RawNic, listener: &mut RawNic, frame: &[u8]) -> Result<(u64, Seen)> {
    let tx = racer.frontend();
    let deadline = Instant::now() + RACE_TIME;
    let mut offered = 0u16;
    let mut sent = 0u64;
    let mut seen = Seen::default();
    while Instant::now() < deadline && sent < RACE_FRAMES {
        let used = tx.used_idx_q(TX);
        while offered.wrapping_sub(used) < QUEUE_SIZE && sent < RACE_FRAMES {
            tx.offer_q(TX, offered % QUEUE_SIZE)?;
            offered = offered.wrapping_add(1);
            sent += 1;
        }
        for got in listener.take_received()? {
            seen.count(&got, frame);
        }
    }
    tx.wait_used_q(TX, offered, Duration::from_secs(10))
        .context("the switch did not take the racer's last frames")?;
    for got in listener.take_received()? {
        seen.count(&got, frame);
    }
    Ok((sent, seen))
}

#[test]
fn a_source_flipped_while_the_switch_reads_it_is_never_delivered() -> Result<()> {
    // Proves that the switch delivers the source it checked: no frame
    // from a forged or half-forged source gets through, however the
    // flips fall, while the forged ones it saw are dropped and counted.
    let dir = TestDir::new("net-racing-source")?;
    let socket = |name: &str| dir.join(format!("{name}.sock"));
    let mut sw = Vswitchd::new(&dir);
    sw.enable_api();
    sw.set_config(json!({
        "port_groups": [{ "name": "lan", "vlan": { "mode": "none" } }],
        "ports": [
            { "name": "racer", "socket": socket("racer"), "mac": frames::mac_text(RACER),
              "port_group": "lan" },
            { "name": "listener", "socket": socket("listener"),
              "mac": frames::mac_text(LISTENER), "port_group": "lan" },
        ],
    }))?;
    let mut listener = RawNic::connect(&socket("listener"), LISTENER)?;
    let mut racer = RawNic::connect_with_buffers(&socket("racer"), RACER, 0)?;
    let frame = frames::patterned(BROADCAST, RACER, None, 60, 7);
    let mut bytes = vec![0u8; HDR];
    bytes.extend_from_slice(&frame);
    racer.frontend().write(TX_AT, &bytes);
    for i in 0..QUEUE_SIZE {
        let d = desc(TX_AT, bytes.len() as u32, 0, 0);
        racer.frontend().set_desc_q(TX, i, d);
    }
    let forged_before = port_drops(&sw, "racer", "forged_source")?;

    let vcpu = racer.frontend().second_vcpu()?;
    let src_at = TX_AT + (HDR + 6) as u64;
    let stop = AtomicBool::new(false);
    let (sent, seen) = std::thread::scope(|s| {
        let stop = &stop;
        s.spawn(move || {
            // Bounded on its own too, should the sender fail.
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < 5 * RACE_TIME {
                vcpu.write(src_at, &FORGED);
                vcpu.write(src_at, &RACER);
            }
        });
        let result = race(&mut racer, &mut listener, &frame);
        stop.store(true, Ordering::Relaxed);
        result
    })?;

    sw.ensure_running()?;
    let forged = port_drops(&sw, "racer", "forged_source")? - forged_before;
    eprintln!("racer sent {sent} frames; listener got {seen:?}; forged_source drops: {forged}");
    ensure!(
        seen.forged == 0 && seen.torn == 0 && seen.other == 0,
        "frames the switch never admitted were delivered: {seen:?} of {sent} sent"
    );
    ensure!(
        seen.own > 0,
        "no frame from the racer got through: {seen:?}"
    );
    ensure!(
        forged > 0,
        "no forged_source drops counted for {sent} frames"
    );
    Ok(())
}
