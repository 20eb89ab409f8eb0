//! The Sfera appliance's installer, `sfera-install`.
//!
//! It runs on the live system the ISO boots (`sfera.mode=install` on the
//! kernel command line): it finds an answer file ([`discover`]) or asks its
//! questions on the console ([`interactive`]), checks everything against the
//! machine before touching a disk ([`answer`], [`inventory`]), then
//! partitions, copies the root file system and installs GRUB for BIOS and
//! UEFI ([`install`]), writing the configuration [`render`] produces.
//!
//! Written in Rust rather than shell so that the answer file is read by a
//! real TOML parser, addresses by the standard library's parsers, the
//! administrator's password hashed with the same argon2 code sfera-mgmtd
//! checks it with, and so that the validation is unit-tested without a VM.

#![forbid(unsafe_code)]

pub mod answer;
pub mod console;
pub mod discover;
pub mod install;
pub mod interactive;
pub mod inventory;
pub mod password;
pub mod render;
