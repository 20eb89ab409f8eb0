//! A disk image whose boot sector prints a line on COM1 and halts: the
//! smallest guest that firmware (SeaBIOS under QEMU) boots from a disk,
//! for the tests of booting imported disk images.

/// What the boot sector prints (then `\r\n`).
pub const MESSAGE: &str = "SFERA-MBR-BOOT-OK";

/// A 1 MiB raw disk image with the boot sector.
pub fn image() -> Vec<u8> {
    #[rustfmt::skip]
    let code: &[u8] = &[
        0xfa,             // cli
        0x31, 0xc0,       // xor ax, ax
        0x8e, 0xd8,       // mov ds, ax
        0xba, 0xf8, 0x03, // mov dx, 0x3f8 (COM1)
        0xbe, 0x16, 0x7c, // mov si, 0x7c16 (the message, at offset 0x16)
        0xac,             // next: lodsb
        0x84, 0xc0,       // test al, al
        0x74, 0x03,       // jz done
        0xee,             // out dx, al
        0xeb, 0xf8,       // jmp next
        0xf4,             // done: hlt
        0xeb, 0xfd,       // jmp done
    ];
    let mut image = vec![0u8; 1 << 20];
    image[..code.len()].copy_from_slice(code);
    let msg = format!("{MESSAGE}\r\n\0");
    image[0x16..0x16 + msg.len()].copy_from_slice(msg.as_bytes());
    image[510] = 0x55;
    image[511] = 0xaa;
    image
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_message_fits_before_the_signature() {
        let i = super::image();
        assert_eq!(&i[510..512], &[0x55, 0xaa]);
        assert_eq!(
            &i[0x16..0x16 + super::MESSAGE.len()],
            super::MESSAGE.as_bytes()
        );
        assert_eq!(i[0x16 + super::MESSAGE.len() + 2], 0);
    }
}
