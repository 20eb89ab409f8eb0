//! The vhost-user frontend in listen mode (QEMU's server mode): the VMM
//! listens on the disk's socket and a backend connects to it. The backend
//! here is a small one built on rust-vmm's vhost-user-backend (an
//! independent implementation of the protocol's other side): it presents a
//! block device's configuration and fills every writable buffer with a
//! marker. A driver in the test sends a request and sees the marker land.

// Test helpers too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackend, VhostUserDaemon, VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm::config::{ConsoleConfig, ConsoleHistory, DiskConfig, SocketMode, VmConfig};
use vmm::machine::Machine;
use vmm::testing::{self, driver::PciDriver};
use vmm_sys_util::epoll::EventSet;

const MARKER: u8 = 0x5a;

type Memory = GuestMemoryAtomic<GuestMemoryMmap>;

struct MarkerBackend {
    mem: Mutex<Option<Memory>>,
}

impl VhostUserBackend for MarkerBackend {
    type Bitmap = ();
    type Vring = VringRwLock<Memory>;

    fn num_queues(&self) -> usize {
        1
    }

    fn max_queue_size(&self) -> usize {
        256
    }

    fn features(&self) -> u64 {
        (1 << 32) | (1 << 30) // VERSION_1, PROTOCOL_FEATURES
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG
    }

    fn set_event_idx(&self, _enabled: bool) {}

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let mut config = [0u8; 60];
        config[0] = 8; // capacity: 8 sectors
        config
            .get(offset as usize..(offset + size) as usize)
            .map(<[u8]>::to_vec)
            .unwrap_or_else(|| vec![0; size as usize])
    }

    fn update_memory(&self, mem: Memory) -> std::io::Result<()> {
        *self.mem.lock().unwrap() = Some(mem);
        Ok(())
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[Self::Vring],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        let (Some(vring), Some(mem)) = (
            vrings.get(usize::from(device_event)),
            self.mem.lock().unwrap().clone(),
        ) else {
            return Ok(());
        };
        let mem = mem.memory();
        loop {
            let chain = vring
                .get_mut()
                .get_queue_mut()
                .pop_descriptor_chain(mem.clone());
            let Some(chain) = chain else { break };
            let head = chain.head_index();
            let mut len = 0;
            for desc in chain.writable() {
                let fill = vec![MARKER; desc.len() as usize];
                mem.write_slice(&fill, desc.addr()).unwrap();
                len += desc.len();
            }
            vring.add_used(head, len).unwrap();
        }
        vring.signal_used_queue()
    }
}

#[test]
fn the_vmm_listens_and_a_backend_connects() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("disk.sock");
    let kernel = dir.path().join("unused");
    std::fs::write(&kernel, b"").unwrap();

    // The backend connects as soon as the VMM listens.
    let path = socket.to_str().unwrap().to_owned();
    let (hung_up, backend_done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let backend = Arc::new(MarkerBackend {
            mem: Mutex::new(None),
        });
        let mut daemon = VhostUserDaemon::new(
            "marker".into(),
            backend,
            GuestMemoryAtomic::new(GuestMemoryMmap::new()),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while daemon.start_client(&path).is_err() {
            assert!(Instant::now() < deadline, "the VMM never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Returns when the VMM hangs up.
        let _ = daemon.wait();
        hung_up.send(()).unwrap();
        // vhost-user-backend's handler joins its vring thread on drop, which
        // this minimal backend gives no exit event: leave it be.
        std::mem::forget(daemon);
    });

    let config = VmConfig {
        vcpus: 1,
        memory_mib: 64,
        hugepages: false,
        kernel,
        initrd: None,
        cmdline: String::new(),
        console: ConsoleConfig {
            stdout: false,
            socket: None,
            history: ConsoleHistory::Replay,
        },
        disks: vec![DiskConfig {
            socket: socket.clone(),
            mode: SocketMode::Listen,
            read_only: true,
        }],
        nets: Vec::new(),
        rng: false,
    };
    let source = testing::cpl3(testing::spin());
    let machine = Machine::build(&config, source).unwrap();
    let drv = PciDriver::new(&machine);
    let slot = drv.find(2, 0).unwrap();
    let mut dev = drv.init(slot, 1 << 5, 64, true).unwrap();
    assert_ne!(
        dev.features & (1 << 5),
        0,
        "read_only offers VIRTIO_BLK_F_RO"
    );
    let mut cap = [0u8; 8];
    drv.read(dev.device_cfg, &mut cap).unwrap();
    assert_eq!(u64::from_le_bytes(cap), 8);

    drv.submit(
        &mut dev,
        0,
        &[(0x20_0000, 16, false), (0x20_1000, 512, true)],
    )
    .unwrap();
    let len = drv.wait_used(&dev, 0, Duration::from_secs(10)).unwrap();
    assert_eq!(len, 512);
    let mut buf = [0u8; 512];
    drv.mem()
        .read_slice(&mut buf, vm_memory::GuestAddress(0x20_1000))
        .unwrap();
    assert!(buf.iter().all(|b| *b == MARKER));
    let counters = machine.device_counters();
    assert_eq!(counters[0]["backend"]["connected"], true, "{counters}");
    assert_eq!(counters[0]["backend"]["setups"], 1, "{counters}");

    drop(machine);
    drop(drv);
    backend_done
        .recv_timeout(Duration::from_secs(10))
        .expect("the backend sees the VMM hang up");
    assert!(!socket.exists(), "the listening socket is removed");
}
