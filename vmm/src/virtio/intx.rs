//! Waiting on eventfds from a worker thread, and the INTx fallback: when
//! the driver has not enabled MSI-X, queue interrupts (written to the
//! queues' call eventfds, by the VMM or by a vhost-user backend) set ISR
//! bit 0 and pulse the device's IOAPIC pin.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

/// ISR bit: a queue needs service.
pub const ISR_QUEUE: u8 = 1;
/// ISR bit: the device configuration (or status) changed.
pub const ISR_CONFIG: u8 = 2;

/// A worker thread woken by eventfds, stopped by its own.
#[derive(Debug)]
pub struct Worker {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Runs `on_event(i)` whenever `fds[i]` is signalled (after reading it),
    /// until stopped.
    pub fn start(
        name: String,
        fds: Vec<Arc<EventFd>>,
        mut on_event: impl FnMut(usize) + Send + 'static,
    ) -> std::io::Result<Worker> {
        let stop = EventFd::new(libc::EFD_NONBLOCK)?;
        let epoll = Epoll::new()?;
        let stop_token = fds.len() as u64;
        for (i, fd) in fds.iter().enumerate() {
            epoll.ctl(
                ControlOperation::Add,
                fd.as_raw_fd(),
                EpollEvent::new(EventSet::IN, i as u64),
            )?;
        }
        epoll.ctl(
            ControlOperation::Add,
            stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, stop_token),
        )?;
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            let mut events = vec![EpollEvent::default(); fds.len() + 1];
            loop {
                let n = match epoll.wait(-1, &mut events) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::error!("Device worker cannot wait: {e}");
                        return;
                    }
                };
                for e in &events[..n] {
                    let token = e.data();
                    if token == stop_token {
                        return;
                    }
                    let i = token as usize;
                    // Non-blocking eventfds: EAGAIN means another pass took it.
                    if fds[i].read().is_ok() {
                        on_event(i);
                    }
                }
            }
        })?;
        Ok(Worker {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it.
    pub fn stop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Relays queue interrupts, and the configuration change interrupt written
/// to `config`, to the INTx line.
pub fn start_relay(
    name: &str,
    calls: Vec<Arc<EventFd>>,
    config: Arc<EventFd>,
    isr: Arc<AtomicU8>,
    line: Arc<EventFd>,
    relayed: Arc<AtomicU64>,
) -> std::io::Result<Worker> {
    let config_index = calls.len();
    let mut fds = calls;
    fds.push(config);
    Worker::start(format!("{name}-intx"), fds, move |i| {
        let bit = if i == config_index {
            ISR_CONFIG
        } else {
            ISR_QUEUE
        };
        isr.fetch_or(bit, Ordering::SeqCst);
        relayed.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = line.write(1) {
            datapath::log_limited!(warn, "Cannot raise INTx: {e}");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_sets_isr_and_pulses_the_line() {
        let call = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let config = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let line = Arc::new(EventFd::new(0).unwrap());
        let isr = Arc::new(AtomicU8::new(0));
        let relayed = Arc::new(AtomicU64::new(0));
        let mut w = start_relay(
            "t",
            vec![call.clone()],
            config.clone(),
            isr.clone(),
            line.clone(),
            relayed.clone(),
        )
        .unwrap();
        call.write(1).unwrap();
        assert_eq!(line.read().unwrap(), 1, "blocking read: the pulse came");
        assert_eq!(isr.load(Ordering::SeqCst), ISR_QUEUE);
        assert_eq!(relayed.load(Ordering::Relaxed), 1);
        isr.store(0, Ordering::SeqCst);
        config.write(1).unwrap();
        assert_eq!(line.read().unwrap(), 1, "the configuration change pulse");
        assert_eq!(isr.load(Ordering::SeqCst), ISR_CONFIG);
        w.stop();
    }
}
