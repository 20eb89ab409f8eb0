//! Fuzzes the switch's frame path on guest input: a transmitting guest's
//! split ring popped, each frame parsed, edited and delivered into a
//! receiving guest's ring, both rings and memories built from the input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vswitch::fuzz::frame_path(data);
});
