//! Interface control through `ifreq` ioctls on a datagram socket: index,
//! flags, bringing an interface up, and reading its link state.
//!
//! The socket belongs to the network namespace of the thread that created
//! it, as do the uplink's TAP or packet socket, so every name here is
//! looked up in that namespace, wherever the caller runs later.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Turns a `-1`-on-error return into the thread's `errno`.
pub(crate) fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Same as [`check`] for byte counts.
pub(crate) fn check_len(ret: libc::ssize_t) -> io::Result<usize> {
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

/// An interface name as the kernel takes it: at most `IFNAMSIZ - 1` bytes,
/// no NUL.
pub(crate) fn valid_ifname(name: &str) -> bool {
    !name.is_empty() && name.len() < libc::IFNAMSIZ && !name.bytes().any(|b| b == 0)
}

/// A zeroed `ifreq` naming `name` (checked by [`valid_ifname`]).
pub(crate) fn ifreq_for(name: &str) -> libc::ifreq {
    // `ifreq` holds integers, byte arrays and a union of those and pointers.
    // SAFETY: zero bytes are a valid `ifreq` (empty name, null pointers).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *dst = src as libc::c_char;
    }
    req
}

/// The name the kernel wrote back into an `ifreq` (up to the first NUL).
pub(crate) fn ifreq_name(req: &libc::ifreq) -> String {
    let bytes: Vec<u8> = req
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `socket(2)` with `SOCK_CLOEXEC` added, as an owned descriptor.
pub(crate) fn socket(
    domain: libc::c_int,
    kind: libc::c_int,
    proto: libc::c_int,
) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers.
    let fd = check(unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, proto) })?;
    // SAFETY: the kernel just returned `fd` to this call and nothing else
    // holds it, so the `OwnedFd` is its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A socket to name interfaces to the kernel in ioctls.
#[derive(Debug)]
pub(crate) struct Control {
    sock: OwnedFd,
}

impl Control {
    /// Opens the control socket in the calling thread's namespace.
    pub(crate) fn open() -> io::Result<Self> {
        Ok(Control {
            sock: socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?,
        })
    }

    /// Runs an `ifreq` ioctl on the control socket.
    fn ioctl(&self, request: libc::c_ulong, req: &mut libc::ifreq) -> io::Result<()> {
        // The requests passed here (SIOCGIFINDEX, SIOCGIFFLAGS, SIOCSIFFLAGS)
        // each read and write one `ifreq`.
        // SAFETY: `req` is a live, exclusively borrowed `ifreq` for the call.
        check(unsafe { libc::ioctl(self.sock.as_raw_fd(), request, req as *mut libc::ifreq) })?;
        Ok(())
    }

    /// The interface's index; `NotFound` when it does not exist.
    pub(crate) fn ifindex(&self, name: &str) -> io::Result<libc::c_int> {
        let mut req = ifreq_for(name);
        self.ioctl(libc::SIOCGIFINDEX, &mut req)?;
        // SAFETY: SIOCGIFINDEX succeeded, so the kernel wrote the union's
        // `ifru_ifindex` member.
        Ok(unsafe { req.ifr_ifru.ifru_ifindex })
    }

    /// The interface's flags (the low 16 bits `SIOCGIFFLAGS` reports).
    pub(crate) fn flags(&self, name: &str) -> io::Result<libc::c_int> {
        let mut req = ifreq_for(name);
        self.ioctl(libc::SIOCGIFFLAGS, &mut req)?;
        // The flags are an unsigned short carried in a signed one: widen
        // without sign extension.
        // SAFETY: SIOCGIFFLAGS succeeded, so the kernel wrote `ifru_flags`.
        Ok(libc::c_int::from(unsafe { req.ifr_ifru.ifru_flags } as u16))
    }

    /// Sets the interface administratively up (no-op when it is).
    pub(crate) fn set_up(&self, name: &str) -> io::Result<()> {
        let flags = self.flags(name)?;
        if flags & libc::IFF_UP != 0 {
            return Ok(());
        }
        let mut req = ifreq_for(name);
        // Only the low 16 bits exist in this ioctl; truncation is the ABI.
        req.ifr_ifru.ifru_flags = (flags | libc::IFF_UP) as u16 as libc::c_short;
        self.ioctl(libc::SIOCSIFFLAGS, &mut req)
    }

    /// Whether the interface is up and has link: `IFF_UP` and `IFF_RUNNING`
    /// (operationally up, which follows carrier). False when it cannot be
    /// read, for instance because the interface is gone.
    pub(crate) fn link_up(&self, name: &str) -> bool {
        let want = libc::IFF_UP | libc::IFF_RUNNING;
        self.flags(name).is_ok_and(|f| f & want == want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        assert!(valid_ifname("eth0"));
        assert!(valid_ifname("fifteen-chars-x"));
        assert!(!valid_ifname("sixteen-chars-xx"));
        assert!(!valid_ifname(""));
        assert!(!valid_ifname("a\0b"));
        let req = ifreq_for("sfut0");
        assert_eq!(ifreq_name(&req), "sfut0");
        assert_eq!(req.ifr_name[5], 0);
    }
}
