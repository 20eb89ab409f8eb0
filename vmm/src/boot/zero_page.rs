//! The Linux zero page (`struct boot_params`) for the 64-bit boot
//! protocol: the kernel's setup header with the loader's fields filled in,
//! and the e820 map.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::{Bytes, GuestAddress};

use super::{BootError, write_err};
use crate::layout;
use crate::memory::GuestMemory;

/// "HdrS".
const HDRS_MAGIC: u32 = 0x5372_6448;
/// `type_of_loader`: undefined loader.
const LOADER_UNDEFINED: u8 = 0xff;
/// `loadflags`: the heap end pointer is valid.
const CAN_USE_HEAP: u8 = 0x80;

/// The zero page for a kernel with `header`.
pub(crate) fn build(
    mut header: setup_header,
    mem_size: u64,
    cmdline_len: usize,
    initrd: Option<(u64, u64)>,
) -> boot_params {
    header.type_of_loader = LOADER_UNDEFINED;
    header.boot_flag = 0xaa55;
    header.header = HDRS_MAGIC;
    header.cmd_line_ptr = layout::CMDLINE as u32;
    header.cmdline_size = cmdline_len as u32;
    header.loadflags |= CAN_USE_HEAP;
    header.heap_end_ptr = 0xfe00;
    if let Some((addr, size)) = initrd {
        header.ramdisk_image = addr as u32;
        header.ramdisk_size = size as u32;
    }
    let mut params = boot_params {
        hdr: header,
        ..Default::default()
    };
    let map = layout::memory_map(mem_size);
    for (slot, e) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind as u32,
        };
    }
    params.e820_entries = map.len().min(params.e820_table.len()) as u8;
    params
}

/// Writes the zero page.
pub(crate) fn write(
    mem: &GuestMemory,
    header: setup_header,
    mem_size: u64,
    cmdline_len: usize,
    initrd: Option<(u64, u64)>,
) -> Result<(), BootError> {
    let params = build(header, mem_size, cmdline_len, initrd);
    mem.write_obj(params, GuestAddress(layout::ZERO_PAGE))
        .map_err(write_err("the zero page"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_page_has_loader_fields_and_e820() {
        let p = build(
            setup_header::default(),
            64 << 20,
            10,
            Some((0x300_0000, 4096)),
        );
        let hdr = p.hdr;
        assert_eq!({ hdr.boot_flag }, 0xaa55);
        assert_eq!({ hdr.header }, HDRS_MAGIC);
        assert_eq!({ hdr.cmd_line_ptr }, layout::CMDLINE as u32);
        assert_eq!({ hdr.ramdisk_image }, 0x300_0000);
        assert_eq!(
            usize::from(p.e820_entries),
            layout::memory_map(64 << 20).len()
        );
        let first = p.e820_table[0];
        assert_eq!(({ first.addr }, { first.r#type }), (0x1000, 1));
    }
}
