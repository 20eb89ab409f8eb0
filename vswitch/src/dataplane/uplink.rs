//! Uplinks: the host NICs through which a switch's VMs reach the physical
//! network, the way a vSphere standard switch has vmnics.
//!
//! An [`Uplink`] is either a TAP device the switch creates (or attaches to)
//! or an AF_PACKET socket bound to an existing host interface. Both give
//! the forwarding worker the same thing: a non-blocking descriptor to poll,
//! whole Ethernet frames exactly as they are on the wire (an 802.1Q tag the
//! kernel took off is put back), gathered sends, and a cheap link check for
//! teaming failover.
//!
//! Everything an uplink opens belongs to the network namespace of the
//! thread that calls [`Uplink::open`].

mod auxdata;
mod link;
mod packet;
mod tap;

use std::io::{self, IoSlice};
use std::os::fd::RawFd;

use crate::control_plane::config::{UplinkConfig, UplinkType};
use link::{Control, valid_ifname};
use packet::PacketSocket;
use tap::TapDevice;

/// Error opening an uplink.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// The configured interface name cannot be a Linux interface name.
    #[error(
        "Uplink {uplink:?}: {interface:?} is not a valid interface name (1 to 15 bytes, no NUL)"
    )]
    BadInterfaceName { uplink: String, interface: String },
    /// An AF_PACKET uplink names an interface the host does not have.
    #[error("Uplink {uplink:?}: host interface {interface:?} does not exist")]
    NoSuchInterface { uplink: String, interface: String },
    /// A step of setting the uplink up failed.
    #[error("Uplink {uplink:?} (interface {interface:?}): cannot {step}")]
    Setup {
        uplink: String,
        interface: String,
        /// What was being done, e.g. "bind the AF_PACKET socket".
        step: &'static str,
        #[source]
        source: io::Error,
    },
}

impl UplinkError {
    /// The host interface the error is about.
    pub fn interface(&self) -> &str {
        match self {
            UplinkError::BadInterfaceName { interface, .. }
            | UplinkError::NoSuchInterface { interface, .. }
            | UplinkError::Setup { interface, .. } => interface,
        }
    }
}

/// A failed setup step, before the uplink's names are attached.
#[derive(Debug)]
pub(crate) struct Failed {
    step: &'static str,
    source: io::Error,
}

/// Names the step an I/O result belongs to.
pub(crate) trait StepExt<T> {
    fn step(self, step: &'static str) -> Result<T, Failed>;
}

impl<T> StepExt<T> for io::Result<T> {
    fn step(self, step: &'static str) -> Result<T, Failed> {
        self.map_err(|source| Failed { step, source })
    }
}

/// Whether an error from [`Uplink::recv`] means the frame was larger than
/// the buffer (and was dropped): count it as an oversize drop.
///
/// Such errors are `io::ErrorKind::InvalidData`, a kind no system call
/// error maps to, and carry no payload so that reporting one allocates
/// nothing.
pub fn is_oversize(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::InvalidData
}

fn oversize() -> io::Error {
    io::Error::from(io::ErrorKind::InvalidData)
}

#[derive(Debug)]
enum Backend {
    Tap(TapDevice),
    Packet(PacketSocket),
}

/// An open uplink. Dropping it closes its descriptors: a TAP device it
/// created disappears, a persistent one it attached to stays, and an
/// AF_PACKET uplink's promiscuous membership ends.
#[derive(Debug)]
pub struct Uplink {
    name: String,
    interface: String,
    backend: Backend,
    control: Control,
}

// The worker owns its uplinks, on its own thread.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<Uplink>();
};

impl Uplink {
    /// Opens the uplink `config` describes, in the calling thread's
    /// network namespace.
    ///
    /// - TAP: creates TAP device `interface` through `/dev/net/tun`
    ///   (`IFF_TAP | IFF_NO_PI`), or attaches to an existing persistent TAP
    ///   of that name, and sets it administratively up.
    /// - AF_PACKET: a `SOCK_RAW` socket for every protocol, bound to the
    ///   existing interface `interface`, promiscuous, with
    ///   `PACKET_AUXDATA` on and `PACKET_IGNORE_OUTGOING` (it does not read
    ///   back what it sends). The interface's own state is left alone.
    ///
    /// Both descriptors are non-blocking and close-on-exec.
    pub fn open(config: &UplinkConfig) -> Result<Uplink, UplinkError> {
        let name = &config.name;
        let setup = |interface: &str, f: Failed| UplinkError::Setup {
            uplink: name.clone(),
            interface: interface.to_owned(),
            step: f.step,
            source: f.source,
        };
        let interface = config.interface.as_str();
        if !valid_ifname(interface) {
            return Err(UplinkError::BadInterfaceName {
                uplink: name.clone(),
                interface: interface.to_owned(),
            });
        }
        let control = Control::open()
            .step("open a socket for interface ioctls")
            .map_err(|f| setup(interface, f))?;
        let (backend, interface) = match config.kind {
            UplinkType::Tap => {
                let (tap, actual) = TapDevice::open(interface).map_err(|f| setup(interface, f))?;
                control
                    .set_up(&actual)
                    .step("set the TAP device up (SIOCSIFFLAGS)")
                    .map_err(|f| setup(&actual, f))?;
                (Backend::Tap(tap), actual)
            }
            UplinkType::AfPacket => {
                let ifindex = match control.ifindex(interface) {
                    Ok(index) => index,
                    Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
                        return Err(UplinkError::NoSuchInterface {
                            uplink: name.clone(),
                            interface: interface.to_owned(),
                        });
                    }
                    Err(e) => {
                        let f = Failed {
                            step: "look up the interface's index",
                            source: e,
                        };
                        return Err(setup(interface, f));
                    }
                };
                let sock = PacketSocket::open(ifindex).map_err(|f| setup(interface, f))?;
                (Backend::Packet(sock), interface.to_owned())
            }
        };
        tracing::info!(uplink = %name, %interface, kind = ?config.kind, "uplink opened");
        Ok(Uplink {
            name: name.clone(),
            interface,
            backend,
            control,
        })
    }

    /// The descriptor to put in an epoll set: readable when frames wait.
    pub fn fd(&self) -> RawFd {
        match &self.backend {
            Backend::Tap(t) => t.fd(),
            Backend::Packet(p) => p.fd(),
        }
    }

    /// Receives one frame (Ethernet header onward) into `buf` and returns
    /// its length, or `Ok(None)` when none waits.
    ///
    /// An AF_PACKET uplink puts back the VLAN tag the kernel took off, so
    /// the frame is as it was on the wire (a TAP does this itself).
    ///
    /// A frame longer than `buf` (tag included) is consumed and reported
    /// as an error for which [`is_oversize`] is true. An empty `buf` is
    /// refused (`InvalidInput`) without reading, since a TAP would drop the
    /// frame.
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        if buf.is_empty() {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let len = match &mut self.backend {
            Backend::Tap(t) => t.recv(buf)?,
            Backend::Packet(p) => p.recv(buf)?,
        };
        match len {
            Some(n) if n > buf.len() => Err(oversize()),
            other => Ok(other),
        }
    }

    /// Receives up to `min(bufs.len(), lens.len())` frames, with tags put
    /// back as [`Uplink::recv`] does, and returns how many; frame `i` is in
    /// `bufs[i]` and its length in `lens[i]`. Zero frames is `Ok(0)`.
    ///
    /// A frame longer than its buffer is consumed and reported by a length
    /// beyond the buffer (`lens[i] > bufs[i].len()`, the frame's length on
    /// the wire): count it as an oversize drop and skip it.
    ///
    /// AF_PACKET receives with `recvmmsg` (one call per 32 frames); a TAP
    /// reads frame by frame. An error after the first frame ends the burst
    /// early and shows on the next call if it lasts. Empty buffers are
    /// refused (`InvalidInput`) without reading.
    pub fn recv_burst(&mut self, bufs: &mut [&mut [u8]], lens: &mut [usize]) -> io::Result<usize> {
        let n = bufs.len().min(lens.len());
        let (bufs, lens) = (&mut bufs[..n], &mut lens[..n]);
        if bufs.iter().any(|b| b.is_empty()) {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        match &mut self.backend {
            Backend::Tap(t) => t.recv_burst(bufs, lens),
            Backend::Packet(p) => p.recv_burst(bufs, lens),
        }
    }

    /// Sends one frame gathered from `frame`'s pieces (`writev` on a TAP,
    /// `sendmsg` on AF_PACKET). A full socket buffer is an error of kind
    /// `WouldBlock`: the frame is not sent, count it as a drop.
    pub fn send(&mut self, frame: &[IoSlice<'_>]) -> io::Result<()> {
        let sent = match &self.backend {
            Backend::Tap(t) => t.send(frame)?,
            Backend::Packet(p) => p.send(frame)?,
        };
        let len: usize = frame.iter().map(|s| s.len()).sum();
        if sent != len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("sent {sent} of the frame's {len} bytes"),
            ));
        }
        Ok(())
    }

    /// Whether the host interface is up and has link now (`IFF_UP` and
    /// `IFF_RUNNING` from one `SIOCGIFFLAGS`, which takes no lock the
    /// worker could wait on). `IFF_RUNNING` follows carrier through the
    /// kernel's link watch: at once for veth and TAP, within about a second
    /// for a physical NIC. False if the interface cannot be read (gone).
    pub fn link_up(&self) -> bool {
        self.control.link_up(&self.interface)
    }

    /// The uplink's name in the configuration.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host interface, as the kernel names it.
    pub fn interface(&self) -> &str {
        &self.interface
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_interface_names_are_refused_before_touching_the_host() {
        for bad in ["", "sixteen-chars-xx", "a\0b"] {
            let config = UplinkConfig {
                name: "u1".into(),
                kind: UplinkType::AfPacket,
                interface: bad.into(),
            };
            let err = Uplink::open(&config).unwrap_err();
            assert!(matches!(err, UplinkError::BadInterfaceName { .. }), "{err}");
            assert_eq!(err.interface(), bad);
            assert!(err.to_string().contains("u1"), "{err}");
        }
    }

    #[test]
    fn oversize_is_its_own_error() {
        assert!(is_oversize(&oversize()));
        assert!(!is_oversize(&io::Error::from_raw_os_error(libc::EAGAIN)));
        assert!(!is_oversize(&io::Error::from_raw_os_error(libc::EINVAL)));
        assert!(!is_oversize(&io::Error::from_raw_os_error(libc::EMSGSIZE)));
    }
}
