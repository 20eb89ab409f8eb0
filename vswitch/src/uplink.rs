//! TEMPORARY interface stand-in (replaced by the uplink branch).
#![allow(missing_docs, clippy::missing_errors_doc)]
use crate::config::UplinkConfig;
use std::os::fd::RawFd;
#[derive(Debug, thiserror::Error)]
#[error("uplink {0}")]
pub struct UplinkError(pub String);
#[derive(Debug)]
pub struct Uplink {
    name: String,
    interface: String,
}
impl Uplink {
    pub fn open(config: &UplinkConfig) -> Result<Uplink, UplinkError> {
        Err(UplinkError(config.name.clone()))
    }
    pub fn fd(&self) -> RawFd {
        -1
    }
    pub fn recv(&mut self, _buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        Ok(None)
    }
    pub fn recv_burst(
        &mut self,
        _bufs: &mut [&mut [u8]],
        _lens: &mut [usize],
    ) -> std::io::Result<usize> {
        Ok(0)
    }
    pub fn send(&mut self, _frame: &[std::io::IoSlice<'_>]) -> std::io::Result<()> {
        Ok(())
    }
    pub fn link_up(&self) -> bool {
        false
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn interface(&self) -> &str {
        &self.interface
    }
}
