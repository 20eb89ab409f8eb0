//! TAP and AF_PACKET uplinks carry frames to the kernel (the host's network stack, veths).
//!
//! sfera-vswitchd's uplinks against the real kernel: a TAP uplink talks
//! ARP and UDP with the host stack on the TAP, AF_PACKET uplinks on the two
//! ends of a veth pair carry frames and VLAN tags to each other and follow
//! the pair's link state.
//!
//! `Uplink` is a library type that opens its devices in the network
//! namespace of the calling thread, so each test runs its body on a thread
//! that has entered a namespace the test created (`setns`): no traffic and
//! no device ever reaches the host's own namespace.

use std::fs::File;
use std::io::IoSlice;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use harness::netns::{NetNs, Tap, unique_name};
use vswitch::config::{UplinkConfig, UplinkType};
use vswitch::uplink::{Uplink, UplinkError, is_oversize};

const WAIT: Duration = Duration::from_secs(10);
/// The address the tests' uplinks send from (locally administered).
const OUR_MAC: [u8; 6] = [0x02, 0x5f, 0, 0, 0, 0x02];
const PEER_MAC: [u8; 6] = [0x02, 0x5f, 0, 0, 0, 0x0b];
/// IEEE "local experimental" EtherType, which no stack answers.
const ETH_EXP: u16 = 0x88b5;

/// Runs `body` on a thread inside `ns` and returns its result.
fn in_netns<T: Send>(ns: &NetNs, body: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let path = Path::new("/run/netns").join(ns.name());
    let file = File::open(&path).with_context(|| format!("open {}", path.display()))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            // setns(2) changes only this thread's network namespace, and this
            // thread exists only to run `body`.
            // SAFETY: `file` is an open namespace file this closure owns.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                bail!("setns: {}", std::io::Error::last_os_error());
            }
            body()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Turns IPv6 off in `ns` so that new interfaces send no solicitations or
/// reports that tests would have to skip.
fn quiet_ipv6(ns: &NetNs) -> Result<()> {
    if Path::new("/proc/sys/net/ipv6").exists() {
        ns.exec_ok(&[
            "sysctl",
            "-q",
            "-w",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ])?;
    }
    Ok(())
}

fn config(name: &str, kind: UplinkType, interface: &str) -> UplinkConfig {
    UplinkConfig {
        name: name.to_owned(),
        kind,
        interface: interface.to_owned(),
    }
}

/// Waits until `fd` is readable or `timeout` passes.
fn poll_readable(fd: RawFd, timeout: Duration) -> Result<()> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: poll(2) reads and writes the one `pollfd` it is given, a live
    // local exclusively borrowed for the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        ensure!(e.kind() == std::io::ErrorKind::Interrupted, "poll: {e}");
    }
    Ok(())
}

/// Receives frames on `up` until one satisfies `want`, skipping others.
fn wait_frame(up: &mut Uplink, what: &str, want: impl Fn(&[u8]) -> bool) -> Result<Vec<u8>> {
    let deadline = Instant::now() + WAIT;
    let mut buf = vec![0u8; 2048];
    loop {
        while let Some(n) = up.recv(&mut buf)? {
            if want(&buf[..n]) {
                return Ok(buf[..n].to_vec());
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        ensure!(
            !left.is_zero(),
            "no {what} on {} within {WAIT:?}",
            up.interface()
        );
        poll_readable(up.fd(), left)?;
    }
}

/// Polls `probe` until it holds, with a deadline.
fn wait_for(what: &str, probe: impl Fn() -> Result<bool>) -> Result<()> {
    harness::wait::wait_until(what, WAIT, || {
        probe()
            .map(|ok| ok.then_some(()))
            .map_err(|e| harness::Error::Parse {
                what: what.to_owned(),
                text: e.to_string(),
            })
    })?;
    Ok(())
}

fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend(src);
    f.extend(ethertype.to_be_bytes());
    f
}

fn arp_request(src_mac: [u8; 6], src_ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = ethernet([0xff; 6], src_mac, 0x0806);
    f.extend([0, 1, 0x08, 0, 6, 4, 0, 1]); // Ethernet, IPv4, request
    f.extend(src_mac);
    f.extend(src_ip.octets());
    f.extend([0; 6]);
    f.extend(target.octets());
    f
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4/UDP frame (UDP checksum 0: none, allowed over IPv4).
fn udp_frame(dst_mac: [u8; 6], src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = (20 + udp_len) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend(src.ip().octets());
    ip.extend(dst.ip().octets());
    let sum = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut f = ethernet(dst_mac, OUR_MAC, 0x0800);
    f.extend(ip);
    f.extend(src.port().to_be_bytes());
    f.extend(dst.port().to_be_bytes());
    f.extend((udp_len as u16).to_be_bytes());
    f.extend([0, 0]);
    f.extend(payload);
    f
}

/// The payload of a UDP frame sent to `port`, if `f` is one.
fn udp_payload_to(f: &[u8], port: u16) -> Option<&[u8]> {
    if f.len() < 42 || f[12..14] != [0x08, 0x00] || f[23] != 17 {
        return None;
    }
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let udp = f.get(14 + ihl..)?;
    (udp.len() >= 8 && udp[2..4] == port.to_be_bytes()).then(|| &udp[8..])
}

/// Sends `frame` in the pieces the worker would gather: addresses,
/// the rest of the header, payload.
fn send_in_pieces(up: &mut Uplink, frame: &[u8], cuts: &[usize]) -> Result<()> {
    let mut pieces = Vec::new();
    let mut at = 0;
    for &cut in cuts.iter().chain([frame.len()].iter()) {
        pieces.push(IoSlice::new(&frame[at..cut]));
        at = cut;
    }
    up.send(&pieces)
        .with_context(|| format!("send on {}", up.interface()))
}

#[test]
fn tap_uplink_exchanges_arp_and_udp_with_the_host_stack() -> Result<()> {
    let ns = NetNs::new()?;
    quiet_ipv6(&ns)?;
    let host = Ipv4Addr::new(10, 77, 0, 1);
    let us = Ipv4Addr::new(10, 77, 0, 2);
    in_netns(&ns, || {
        let mut up = Uplink::open(&config("tap-up", UplinkType::Tap, "sfut0"))?;
        ensure!(up.interface() == "sfut0" && up.name() == "tap-up");
        let link = ns.exec_ok(&["ip", "link", "show", "sfut0"])?;
        ensure!(
            link.contains(",UP"),
            "the uplink did not set sfut0 up: {link}"
        );
        wait_for("sfut0 to have link", || Ok(up.link_up()))?;
        ns.exec_ok(&["ip", "addr", "add", "10.77.0.1/24", "dev", "sfut0"])?;

        // The host answers our ARP request with its MAC.
        send_in_pieces(&mut up, &arp_request(OUR_MAC, us, host), &[14])?;
        let reply = wait_frame(&mut up, "ARP reply", |f| {
            f.len() >= 42
                && f[12..14] == [0x08, 0x06]
                && f[20..22] == [0, 2]
                && f[28..32] == host.octets()
        })?;
        ensure!(
            reply[..6] == OUR_MAC && reply[32..38] == OUR_MAC,
            "{reply:02x?}"
        );
        let host_mac: [u8; 6] = reply[22..28].try_into()?;
        let mac_text = host_mac.map(|b| format!("{b:02x}")).join(":");
        let link = ns.exec_ok(&["ip", "link", "show", "sfut0"])?;
        ensure!(
            link.contains(&mac_text),
            "ARP reply from {mac_text}, not sfut0: {link}"
        );

        // A UDP datagram we send reaches a socket in the namespace.
        let sock = UdpSocket::bind(SocketAddrV4::new(host, 7777))?;
        sock.set_read_timeout(Some(WAIT))?;
        let from = SocketAddrV4::new(us, 5555);
        let frame = udp_frame(
            host_mac,
            from,
            SocketAddrV4::new(host, 7777),
            b"sfera-uplink",
        );
        send_in_pieces(&mut up, &frame, &[12, 14, 42])?;
        let mut got = [0u8; 64];
        let (n, peer) = sock.recv_from(&mut got)?;
        ensure!(
            &got[..n] == b"sfera-uplink" && peer == from.into(),
            "{peer} sent {:?}",
            &got[..n]
        );

        // Datagrams to us come out of the uplink; one too big for the buffer
        // is reported as oversize.
        let mac_arg = OUR_MAC.map(|b| format!("{b:02x}")).join(":");
        ns.exec_ok(&[
            "ip",
            "neigh",
            "replace",
            "10.77.0.2",
            "lladdr",
            &mac_arg,
            "dev",
            "sfut0",
        ])?;
        sock.send_to(&[0xab; 1000], from)?;
        expect_oversize(&mut up, 256)?;
        for payload in [&b"one"[..], b"two", &[0xcd; 600], b"three"] {
            sock.send_to(payload, from)?;
        }
        let seen = burst_until(&mut up, 4, 256, |f| {
            udp_payload_to(f, 5555).map(<[u8]>::to_vec)
        })?;
        let want = [
            Seen::Frame(b"one".to_vec()),
            Seen::Frame(b"two".to_vec()),
            Seen::Oversize(14 + 20 + 8 + 600),
            Seen::Frame(b"three".to_vec()),
        ];
        ensure!(seen == want, "{seen:?}");

        drop(up);
        Ok(())
    })?;
    // The uplink created sfut0, so closing it removed the device.
    wait_for("sfut0 to disappear", || {
        Ok(ns.exec_ok(&["ip", "link", "show", "sfut0"]).is_err())
    })
}

/// What a burst receive gave for one frame.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Frame(Vec<u8>),
    Oversize(usize),
}

/// Receives with `recv(buf_len-byte buffer)` until a frame is refused as
/// oversize; frames that fit are skipped.
fn expect_oversize(up: &mut Uplink, buf_len: usize) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    let mut buf = vec![0u8; buf_len];
    loop {
        match up.recv(&mut buf) {
            Err(e) if is_oversize(&e) => return Ok(()),
            Err(e) => return Err(e.into()),
            Ok(Some(_)) => continue,
            Ok(None) => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        ensure!(!left.is_zero(), "no oversize frame on {}", up.interface());
        poll_readable(up.fd(), left)?;
    }
}

/// Receives bursts into `buf_len`-byte buffers until `count` frames that
/// `pick` takes something from (or that are oversize) arrived, in order.
fn burst_until(
    up: &mut Uplink,
    count: usize,
    buf_len: usize,
    pick: impl Fn(&[u8]) -> Option<Vec<u8>>,
) -> Result<Vec<Seen>> {
    let deadline = Instant::now() + WAIT;
    let mut storage = vec![vec![0u8; buf_len]; 8];
    let mut seen = Vec::new();
    while seen.len() < count {
        let mut bufs: Vec<&mut [u8]> = storage.iter_mut().map(|b| &mut b[..]).collect();
        let mut lens = [0usize; 8];
        let n = up.recv_burst(&mut bufs, &mut lens)?;
        for (buf, &len) in bufs.iter().zip(&lens).take(n) {
            if len > buf_len {
                seen.push(Seen::Oversize(len));
            } else if let Some(part) = pick(&buf[..len]) {
                seen.push(Seen::Frame(part));
            }
        }
        if n == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            ensure!(
                !left.is_zero(),
                "only {seen:?} arrived on {}",
                up.interface()
            );
            poll_readable(up.fd(), left)?;
        }
    }
    Ok(seen)
}

#[test]
fn tap_uplink_attaches_to_a_persistent_tap_and_leaves_it() -> Result<()> {
    let ns = NetNs::new()?;
    let tap = Tap::new(Some(&ns))?;
    let name = tap.name().to_owned();
    in_netns(&ns, || {
        let up = Uplink::open(&config("persistent", UplinkType::Tap, &name))?;
        ensure!(up.interface() == name);
        wait_for("the TAP to have link", || Ok(up.link_up()))?;
        // One queue, one owner: a second uplink on the same TAP is refused,
        // naming it.
        let err = Uplink::open(&config("again", UplinkType::Tap, &name))
            .err()
            .ok_or_else(|| anyhow!("a second uplink attached to {name}"))?;
        ensure!(
            matches!(err, UplinkError::Setup { .. }) && err.to_string().contains(&name),
            "{err}"
        );
        drop(up);
        Ok(())
    })?;
    // Persistent: still there after the uplink closed it, now without
    // carrier.
    let link = ns.exec_ok(&["ip", "link", "show", &name])?;
    ensure!(link.contains("NO-CARRIER"), "{link}");
    Ok(())
}

/// A `len`-byte frame with `tags` (TPID, TCI) after the addresses, the
/// local experimental EtherType, and a patterned payload.
fn experimental_frame(src: [u8; 6], dst: [u8; 6], tags: &[(u16, u16)], len: usize) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend(src);
    for (tpid, tci) in tags {
        f.extend(tpid.to_be_bytes());
        f.extend(tci.to_be_bytes());
    }
    f.extend(ETH_EXP.to_be_bytes());
    let mut byte = 0u8;
    f.resize_with(len, || {
        byte = byte.wrapping_add(7);
        byte
    });
    f
}

fn promiscuity(ns: &NetNs, dev: &str) -> Result<u32> {
    let out = ns.exec_ok(&["ip", "-d", "link", "show", dev])?;
    let word = out
        .split_whitespace()
        .skip_while(|w| *w != "promiscuity")
        .nth(1)
        .ok_or_else(|| anyhow!("no promiscuity in {out}"))?;
    Ok(word.parse()?)
}

#[test]
fn af_packet_uplinks_carry_frames_and_vlan_tags_across_a_veth() -> Result<()> {
    let ns = NetNs::new()?;
    quiet_ipv6(&ns)?;
    let (a, b) = (unique_name("sfpa"), unique_name("sfpb"));
    ns.exec_ok(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b])?;
    for dev in [&a, &b] {
        ns.exec_ok(&["ip", "link", "set", dev, "up"])?;
    }
    in_netns(&ns, || {
        let mut ua = Uplink::open(&config("ua", UplinkType::AfPacket, &a))?;
        let mut ub = Uplink::open(&config("ub", UplinkType::AfPacket, &b))?;
        ensure!(promiscuity(&ns, &a)? == 1, "{a} is not promiscuous");
        wait_for(
            "both ends to have link",
            || Ok(ua.link_up() && ub.link_up()),
        )?;

        // Untagged, gathered from three pieces: arrives whole on the peer.
        // (The kernel never loops a packet socket's own sends back to it.)
        let plain = experimental_frame(OUR_MAC, PEER_MAC, &[], 100);
        send_in_pieces(&mut ua, &plain, &[12, 14])?;
        wait_frame(&mut ub, "the untagged frame", |f| f == plain)?;

        // What the host stack sends out of `a` is not read by its uplink
        // (PACKET_IGNORE_OUTGOING), only by the peer's.
        ns.exec_ok(&["ip", "addr", "add", "10.78.0.1/24", "dev", &a])?;
        let probe = UdpSocket::bind("10.78.0.1:0")?;
        probe.send_to(b"x", "10.78.0.2:9")?;
        let is_host_arp =
            |f: &[u8]| f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[38..42] == [10, 78, 0, 2];
        wait_frame(&mut ub, "the host's ARP request out of a", is_host_arp)?;
        let mut buf = vec![0u8; 2048];
        while let Some(n) = ua.recv(&mut buf)? {
            ensure!(
                !is_host_arp(&buf[..n]),
                "{a}'s uplink read the host's own ARP request"
            );
        }

        // The receiving veth end moves the tag into metadata; the uplink
        // puts it back from auxdata. The worker pushes a tag as a piece.
        let tagged = experimental_frame(PEER_MAC, OUR_MAC, &[(0x8100, 0x6064)], 80);
        send_in_pieces(&mut ub, &tagged, &[12, 16])?;
        wait_frame(&mut ua, "the 802.1Q-tagged frame", |f| f == tagged)?;
        // An 802.1ad service tag keeps its TPID; the inner tag stays inline.
        let qinq = experimental_frame(PEER_MAC, OUR_MAC, &[(0x88a8, 200), (0x8100, 0x200a)], 90);
        send_in_pieces(&mut ub, &qinq, &[12])?;
        wait_frame(&mut ua, "the 802.1ad-tagged frame", |f| f == qinq)?;
        // A priority-tagged frame (VLAN 0) keeps its tag too.
        let prio = experimental_frame(PEER_MAC, OUR_MAC, &[(0x8100, 0xa000)], 70);
        send_in_pieces(&mut ub, &prio, &[12])?;
        wait_frame(&mut ua, "the priority-tagged frame", |f| f == prio)?;

        // Oversize: with `recv`, an error; in a burst, a length beyond the
        // buffer. A tagged frame that would fit only without its tag is
        // oversize as well.
        send_in_pieces(
            &mut ub,
            &experimental_frame(PEER_MAC, OUR_MAC, &[], 1400),
            &[],
        )?;
        expect_oversize(&mut ua, 256)?;
        let small: Vec<Vec<u8>> = (0..3)
            .map(|i| {
                experimental_frame(PEER_MAC, OUR_MAC, &[(0x8100, 10 + i)], 60 + usize::from(i))
            })
            .collect();
        let just_over = experimental_frame(PEER_MAC, OUR_MAC, &[(0x8100, 5)], 258);
        for f in [&small[0], &just_over, &small[1], &small[2]] {
            send_in_pieces(&mut ub, f, &[])?;
        }
        let seen = burst_until(&mut ua, 4, 256, |f| {
            (f.len() >= 18 && f[16..18] == ETH_EXP.to_be_bytes()).then(|| f.to_vec())
        })?;
        let want = [
            Seen::Frame(small[0].clone()),
            Seen::Oversize(258),
            Seen::Frame(small[1].clone()),
            Seen::Frame(small[2].clone()),
        ];
        ensure!(seen == want, "{seen:?}");

        // Link follows the peer's state, on both ends.
        ns.exec_ok(&["ip", "link", "set", &b, "down"])?;
        wait_for("both ends to lose link", || {
            Ok(!ua.link_up() && !ub.link_up())
        })?;
        ns.exec_ok(&["ip", "link", "set", &b, "up"])?;
        wait_for("both ends to have link again", || {
            Ok(ua.link_up() && ub.link_up())
        })?;

        drop((ua, ub));
        ensure!(promiscuity(&ns, &a)? == 0, "{a} stayed promiscuous");
        Ok(())
    })
}

#[test]
fn uplinks_on_missing_or_wrong_interfaces_fail_naming_them() -> Result<()> {
    let ns = NetNs::new()?;
    let (a, b) = (unique_name("sfpa"), unique_name("sfpb"));
    ns.exec_ok(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b])?;
    in_netns(&ns, || {
        let err = Uplink::open(&config("u", UplinkType::AfPacket, "sfnope0"))
            .err()
            .ok_or_else(|| anyhow!("opened a missing interface"))?;
        ensure!(matches!(err, UplinkError::NoSuchInterface { .. }), "{err}");
        ensure!(err.to_string().contains("\"sfnope0\""), "{err}");

        // A TAP uplink cannot take over an interface that is not a TAP.
        let err = Uplink::open(&config("u", UplinkType::Tap, &a))
            .err()
            .ok_or_else(|| anyhow!("a TAP uplink opened veth {a}"))?;
        ensure!(
            err.interface() == a && err.to_string().contains(&a),
            "{err}"
        );
        Ok(())
    })
}

#[test]
fn vlan_tags_cross_a_bridge_between_a_tap_and_an_af_packet_uplink() -> Result<()> {
    let ns = NetNs::new()?;
    quiet_ipv6(&ns)?;
    let (x, y) = (unique_name("sfpa"), unique_name("sfpb"));
    ns.exec_ok(&["ip", "link", "add", &x, "type", "veth", "peer", "name", &y])?;
    ns.exec_ok(&["ip", "link", "add", "sfbr0", "type", "bridge"])?;
    in_netns(&ns, || {
        let mut tap = Uplink::open(&config("tap", UplinkType::Tap, "sfut1"))?;
        for port in ["sfut1", x.as_str()] {
            ns.exec_ok(&["ip", "link", "set", port, "master", "sfbr0"])?;
        }
        for dev in [x.as_str(), &y, "sfbr0"] {
            ns.exec_ok(&["ip", "link", "set", dev, "up"])?;
        }
        let mut wire = Uplink::open(&config("wire", UplinkType::AfPacket, &y))?;
        wait_for("both uplinks to have link", || {
            Ok(tap.link_up() && wire.link_up())
        })?;

        // Veth `x` takes the tag off on receive and the bridge forwards the
        // frame with the tag kept aside: the TAP driver writes it back.
        let out = experimental_frame(OUR_MAC, PEER_MAC, &[(0x8100, 0x2000 | 30)], 120);
        send_in_pieces(&mut wire, &out, &[12, 16])?;
        wait_frame(&mut tap, "the tagged frame from the veth", |f| f == out)?;
        // The other way, the AF_PACKET uplink restores it from auxdata.
        let back = experimental_frame(PEER_MAC, OUR_MAC, &[(0x8100, 31)], 90);
        send_in_pieces(&mut tap, &back, &[12, 16])?;
        wait_frame(&mut wire, "the tagged frame from the TAP", |f| f == back)?;
        Ok(())
    })
}
