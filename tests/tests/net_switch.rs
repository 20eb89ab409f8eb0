//! sfera-vswitchd floods, learns, tags and polices forged sources (raw vhost-user frontends).
//!
//! sfera-vswitchd's switching, driven through the vhost-user protocol by
//! raw frontends (each plays a guest's virtio-net driver): flooding within
//! a VLAN, learning, 802.1Q push and pop at access and trunk ports, and the
//! forged-transmit policy.
//!
//! (Linux guests under Debian's QEMU 7.2 cannot use these ports yet: its
//! vhost-user-net drops the protocol-features bit from SET_FEATURES and
//! the rust-vmm vhost crate then refuses SET_VRING_ENABLE. See vswitch/README.)

use std::time::Duration;

use anyhow::{Result, ensure};
use harness::daemons::vswitchd::Vswitchd;
use harness::raw_frontend::{BUFFERS, Desc, F_WRITE, RawFrontend};
use harness::testdir::TestDir;

const RX: usize = 0;
const TX: usize = 1;
const HDR: usize = 12;
const RX_BUFS: u16 = 8;
const BUF_LEN: u32 = 2048;
const TX_AT: u64 = BUFFERS + 0x8000;
const WAIT: Duration = Duration::from_secs(10);
const FEATURES: u64 = (1 << 32) | (1 << 15); // VERSION_1, MRG_RXBUF

struct Nic {
    f: RawFrontend,
    mac: [u8; 6],
    rx_seen: u16,
    tx_sent: u16,
}

impl Nic {
    fn connect(socket: &std::path::Path, mac: [u8; 6]) -> Result<Self> {
        let mut f = RawFrontend::connect_queues(socket, 2, FEATURES)?;
        for i in 0..RX_BUFS {
            let addr = BUFFERS + u64::from(i) * u64::from(BUF_LEN);
            f.set_desc_q(
                RX,
                i,
                Desc {
                    addr,
                    len: BUF_LEN,
                    flags: F_WRITE,
                    next: 0,
                },
            );
            f.offer_q(RX, i)?;
        }
        Ok(Nic {
            f,
            mac,
            rx_seen: 0,
            tx_sent: 0,
        })
    }

    /// Sends `frame` (a virtio-net header is put in front).
    fn send(&mut self, frame: &[u8]) -> Result<()> {
        let mut bytes = vec![0u8; HDR];
        bytes.extend_from_slice(frame);
        self.f.write(TX_AT, &bytes);
        self.f.set_desc_q(
            TX,
            0,
            Desc {
                addr: TX_AT,
                len: bytes.len() as u32,
                flags: 0,
                next: 0,
            },
        );
        self.f.offer_q(TX, 0)?;
        self.tx_sent = self.tx_sent.wrapping_add(1);
        self.f.wait_used_q(TX, self.tx_sent, WAIT)?;
        Ok(())
    }

    /// Frames received so far and not yet taken, each without its header.
    fn take_received(&mut self) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        while self.rx_seen != self.f.used_idx_q(RX) {
            let (id, len) = self.f.used_elem_q(RX, self.rx_seen);
            let addr = BUFFERS + u64::from(id) * u64::from(BUF_LEN);
            let data = self.f.read(addr, len as usize);
            ensure!(data.len() >= HDR, "short receive");
            ensure!(
                u16::from_le_bytes([data[10], data[11]]) == 1,
                "num_buffers != 1"
            );
            out.push(data[HDR..].to_vec());
            // Give the buffer back.
            self.f.offer_q(RX, u16::try_from(id)?)?;
            self.rx_seen = self.rx_seen.wrapping_add(1);
        }
        Ok(out)
    }

    /// Waits for the next frame.
    fn receive(&mut self) -> Result<Vec<u8>> {
        self.f.wait_used_q(RX, self.rx_seen.wrapping_add(1), WAIT)?;
        let mut frames = self.take_received()?;
        ensure!(
            frames.len() == 1,
            "expected one frame, got {}",
            frames.len()
        );
        Ok(frames.remove(0))
    }
}

fn frame(dst: [u8; 6], src: [u8; 6], vlan: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    if let Some(vid) = vlan {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&[0x88, 0xb5]); // local experimental EtherType
    f.extend_from_slice(payload);
    f
}

const BCAST: [u8; 6] = [0xff; 6];

#[test]
fn vlans_learning_and_security_through_vhost_user() -> Result<()> {
    let dir = TestDir::new("net-switch")?;
    let mut sw = Vswitchd::new(&dir);
    sw.add_port_group("v10", serde_json::json!({ "mode": "access", "id": 10 }));
    sw.add_port_group("v20", serde_json::json!({ "mode": "access", "id": 20 }));
    sw.add_port_group(
        "trunk",
        serde_json::json!({ "mode": "trunk", "allowed": [10, 20] }),
    );
    let macs = [
        [2, 0, 0, 0, 0, 1],
        [2, 0, 0, 0, 0, 2],
        [2, 0, 0, 0, 0, 3],
        [2, 0, 0, 0, 0, 4],
    ];
    let mac_text = |m: [u8; 6]| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    let sa = sw.add_port("a", &mac_text(macs[0]), "v10")?;
    let sb = sw.add_port("b", &mac_text(macs[1]), "v10")?;
    let sc = sw.add_port("c", &mac_text(macs[2]), "v20")?;
    let st = sw.add_port("t", &mac_text(macs[3]), "trunk")?;
    let mut a = Nic::connect(&sa, macs[0])?;
    let mut b = Nic::connect(&sb, macs[1])?;
    let mut c = Nic::connect(&sc, macs[2])?;
    let mut t = Nic::connect(&st, macs[3])?;

    // A broadcast in VLAN 10 reaches b untagged and the trunk tagged 10,
    // not c (VLAN 20).
    let hello = frame(BCAST, a.mac, None, b"hello from a");
    a.send(&hello)?;
    ensure!(b.receive()? == hello, "b got the broadcast unchanged");
    ensure!(
        t.receive()? == frame(BCAST, a.mac, Some(10), b"hello from a"),
        "trunk got it tagged 10"
    );
    ensure!(
        c.take_received()?.is_empty(),
        "VLAN 20 saw VLAN 10's broadcast"
    );

    // a was learned: b's unicast reply goes to a only.
    let reply = frame(a.mac, b.mac, None, b"reply from b");
    b.send(&reply)?;
    ensure!(a.receive()? == reply, "a got the unicast");
    // A marker broadcast from b proves the trunk got nothing in between.
    let marker = frame(BCAST, b.mac, None, b"marker");
    b.send(&marker)?;
    ensure!(
        t.receive()? == frame(BCAST, b.mac, Some(10), b"marker"),
        "trunk saw the unicast"
    );
    ensure!(a.receive()? == marker, "a got the marker");

    // The trunk sends tagged 20: c gets it untagged; VLAN 10 does not.
    t.send(&frame(BCAST, t.mac, Some(20), b"to vlan 20"))?;
    ensure!(
        c.receive()? == frame(BCAST, t.mac, None, b"to vlan 20"),
        "c got the frame untagged"
    );
    // A tag the trunk does not allow is dropped; so is an untagged frame.
    t.send(&frame(BCAST, t.mac, Some(30), b"vlan 30"))?;
    t.send(&frame(BCAST, t.mac, None, b"untagged"))?;
    t.send(&frame(BCAST, t.mac, Some(10), b"vlan 10 marker"))?;
    ensure!(
        a.receive()? == frame(BCAST, t.mac, None, b"vlan 10 marker"),
        "a: only the allowed frame"
    );
    ensure!(
        b.receive()? == frame(BCAST, t.mac, None, b"vlan 10 marker"),
        "b: only the allowed frame"
    );
    ensure!(
        c.take_received()?.is_empty(),
        "c got a frame not of its VLAN"
    );

    // Forged transmits are rejected by default: a frame from a with b's
    // source address goes nowhere.
    a.send(&frame(BCAST, b.mac, None, b"forged"))?;
    a.send(&frame(BCAST, a.mac, None, b"honest"))?;
    ensure!(
        b.receive()? == frame(BCAST, a.mac, None, b"honest"),
        "the forged frame got through"
    );

    // Runts are dropped and the switch goes on.
    a.send(&[1, 2, 3])?;
    a.send(&hello)?;
    ensure!(b.receive()? == hello, "after a runt");
    sw.ensure_running()?;
    Ok(())
}
