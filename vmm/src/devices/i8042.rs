//! The i8042 controller's command port: writing 0xFE (pulse the CPU reset
//! line) to port 0x64 ends the VM with exit status 0.

use std::sync::mpsc::Sender;
use std::sync::{Mutex, PoisonError};

use vm_superio::{I8042Device, Trigger};

use crate::bus::BusDevice;
use crate::cpu::VmEvent;

/// First port of the controller (data at 0x60, command/status at 0x64).
pub const I8042_BASE: u64 = 0x60;
/// Ports 0x60..=0x64.
pub const I8042_LEN: u64 = 5;

/// Turns the reset line into a power-off event.
#[derive(Debug)]
pub struct ResetLine {
    events: Mutex<Sender<VmEvent>>,
}

impl Trigger for ResetLine {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        let _ = self
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(VmEvent::PowerOff {
                reason: "guest reset through the i8042 (0xFE to port 0x64)".to_owned(),
            });
        Ok(())
    }
}

/// The controller on the port-I/O bus.
#[derive(Debug)]
pub struct I8042 {
    device: I8042Device<ResetLine>,
}

impl I8042 {
    pub fn new(events: Sender<VmEvent>) -> I8042 {
        I8042 {
            device: I8042Device::new(ResetLine {
                events: Mutex::new(events),
            }),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        let v = self.device.read(offset as u8);
        data.fill(v);
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        if let Some(&v) = data.first() {
            let _ = self.device.write(offset as u8, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_powers_off_and_nothing_else_does() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut dev = I8042::new(tx);
        dev.write(I8042_BASE, 4, &[0xAA]);
        dev.write(I8042_BASE, 0, &[0xFE]);
        assert!(rx.try_recv().is_err());
        dev.write(I8042_BASE, 4, &[0xFE]);
        assert!(matches!(rx.try_recv(), Ok(VmEvent::PowerOff { .. })));
        let mut status = [0xffu8];
        dev.read(I8042_BASE, 4, &mut status);
        assert_eq!(status, [0]);
    }
}
