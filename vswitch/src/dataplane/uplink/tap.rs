//! A TAP device as an uplink: frames written to the descriptor enter the
//! host's network stack on the TAP interface, frames the stack sends out of
//! it are read from the descriptor.
//!
//! The device is opened with `IFF_TAP | IFF_NO_PI` and no virtio-net
//! header, so the kernel keeps checksum and segmentation offloads off on it
//! and every frame read is complete, as it would be on a wire. A VLAN tag
//! the stack left in metadata is written into the frame by the TAP driver
//! itself, so no tag restoration is needed here.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::link::{check, check_len, ifreq_for, ifreq_name};
use super::{Failed, StepExt};

const TUN_PATH: &std::ffi::CStr = c"/dev/net/tun";

/// Room past the caller's buffer for the rest of a frame that does not
/// fit in it: the largest frame a TAP can hold (64 KiB MTU, Ethernet
/// header and a tag), so an oversize frame's length is known exactly.
const OVERFLOW_LEN: usize = 65_536 + 64;

/// An open TAP device.
#[derive(Debug)]
pub(crate) struct TapDevice {
    fd: OwnedFd,
    /// Where `readv` puts what does not fit in the caller's buffer. A
    /// plain `read` cannot tell a truncated frame from one that filled the
    /// buffer: the TAP driver returns the bytes it copied, not the frame's
    /// length.
    overflow: Box<[u8]>,
}

impl TapDevice {
    /// Creates TAP device `name`, or attaches to an existing (persistent)
    /// TAP of that name. Returns it with the name the kernel reports.
    /// Closing the descriptor removes a device this call created; a
    /// persistent one stays.
    pub(crate) fn open(name: &str) -> Result<(Self, String), Failed> {
        let flags = libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC;
        // SAFETY: `TUN_PATH` is a NUL-terminated string that outlives the
        // call; open(2) only reads it.
        let fd =
            check(unsafe { libc::open(TUN_PATH.as_ptr(), flags) }).step("open /dev/net/tun")?;
        // SAFETY: open(2) just returned `fd` and nothing else holds it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };

        let mut req = ifreq_for(name);
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one `ifreq`; `req` is a live,
        // exclusively borrowed `ifreq` for the duration of the call.
        check(unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                libc::TUNSETIFF,
                &mut req as *mut libc::ifreq,
            )
        })
        .step("create the TAP device or attach to the existing TAP of that name")?;
        let overflow = vec![0u8; OVERFLOW_LEN].into_boxed_slice();
        Ok((TapDevice { fd, overflow }, ifreq_name(&req)))
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads one frame into `buf`. Returns its length, which is more than
    /// `buf.len()` when it did not fit (the rest went to `overflow`).
    pub(crate) fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let iov = [
            libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            },
            libc::iovec {
                iov_base: self.overflow.as_mut_ptr().cast(),
                iov_len: self.overflow.len(),
            },
        ];
        // The kernel writes only within the iovecs' lengths and reads the
        // iovec array, a live local.
        // SAFETY: they cover `buf` and `self.overflow`, both exclusively borrowed.
        let ret = unsafe { libc::readv(self.fd(), iov.as_ptr(), 2) };
        match check_len(ret) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads frames until `bufs` is full or none waits. An error after the
    /// first frame ends the burst; the next call reports it if it persists.
    pub(crate) fn recv_burst(
        &mut self,
        bufs: &mut [&mut [u8]],
        lens: &mut [usize],
    ) -> io::Result<usize> {
        let mut count = 0;
        for (buf, len) in bufs.iter_mut().zip(lens.iter_mut()) {
            match self.recv(buf) {
                Ok(Some(n)) => *len = n,
                Ok(None) => break,
                Err(e) if count == 0 => return Err(e),
                Err(_) => break,
            }
            count += 1;
        }
        Ok(count)
    }

    /// Writes one frame gathered from `frame`.
    pub(crate) fn send(&self, frame: &[IoSlice<'_>]) -> io::Result<usize> {
        let count = libc::c_int::try_from(frame.len())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // `IoSlice` is ABI-compatible with `iovec` (std guarantees it on Unix).
        // SAFETY: the kernel reads `count` of them and their bytes, all borrowed for the call.
        let ret = unsafe { libc::writev(self.fd(), frame.as_ptr().cast(), count) };
        check_len(ret)
    }
}
