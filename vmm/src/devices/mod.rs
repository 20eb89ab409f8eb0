//! Legacy devices: the 8250 serial console on COM1 and the i8042 reset
//! line, and the console's Unix socket.

pub mod console;
pub mod i8042;
pub mod serial;
