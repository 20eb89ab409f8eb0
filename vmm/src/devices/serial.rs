//! The 8250 UART on COM1 (port 0x3F8, IRQ 4), from vm-superio, with its
//! interrupt line as an irqfd and its output on the console sinks.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::console::{ConsoleInput, ConsoleOut};
use crate::bus::BusDevice;
use crate::timings::{self, Step};

/// The transmit register's offset, and the line control register's with
/// its divisor-latch bit (while set, offset 0 is the divisor, not data).
const THR: u64 = 0;
const LCR: u8 = 3;
const LCR_DLAB: u8 = 0x80;

/// COM1's first port.
pub const COM1_BASE: u64 = 0x3F8;
/// The UART's eight registers.
pub const COM1_LEN: u64 = 8;
/// COM1's ISA interrupt line (and IOAPIC pin).
pub const COM1_IRQ: u32 = 4;

/// Raises the UART's interrupt through an eventfd bound to its GSI.
#[derive(Debug)]
pub struct IrqLine(pub Arc<EventFd>);

impl Trigger for IrqLine {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// The UART on the port-I/O bus.
#[derive(Debug)]
pub struct SerialDevice {
    uart: Serial<IrqLine, NoEvents, ConsoleOut>,
}

impl SerialDevice {
    pub fn new(irq: Arc<EventFd>, out: ConsoleOut) -> SerialDevice {
        SerialDevice {
            uart: Serial::new(IrqLine(irq), out),
        }
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        let v = self.uart.read(offset as u8);
        data.fill(v);
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        if offset == THR
            && !timings::reached(Step::FirstConsoleByte)
            && self.uart.read(LCR) & LCR_DLAB == 0
        {
            timings::mark(Step::FirstConsoleByte);
        }
        if let Some(&v) = data.first()
            && let Err(e) = self.uart.write(offset as u8, v)
        {
            datapath::log_limited!(warn, "Serial write failed: {e}");
        }
    }
}

/// Console input into the UART's receive FIFO; waits while the FIFO is
/// full (the guest drains it).
#[derive(Debug)]
pub struct SerialInput(pub Arc<Mutex<SerialDevice>>);

impl ConsoleInput for SerialInput {
    fn input(&self, mut bytes: &[u8]) {
        for _ in 0..10_000 {
            if bytes.is_empty() {
                return;
            }
            let taken = {
                let mut dev = self.0.lock().unwrap_or_else(PoisonError::into_inner);
                let room = dev.uart.fifo_capacity();
                let n = room.min(bytes.len());
                if n == 0 {
                    0
                } else {
                    dev.uart.enqueue_raw_bytes(&bytes[..n]).unwrap_or(0)
                }
            };
            bytes = &bytes[taken..];
            if taken == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_reaches_the_sinks_and_input_raises_the_irq() {
        let irq = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let out = ConsoleOut::new(false);
        let dev = Arc::new(Mutex::new(SerialDevice::new(irq.clone(), out)));
        // Enable the "received data available" interrupt (IER bit 0).
        dev.lock().unwrap().write(COM1_BASE, 1, &[1]);
        SerialInput(dev.clone()).input(b"x");
        assert_eq!(irq.read().unwrap(), 1);
        let mut b = [0u8];
        dev.lock().unwrap().read(COM1_BASE, 0, &mut b);
        assert_eq!(&b, b"x");
    }
}
