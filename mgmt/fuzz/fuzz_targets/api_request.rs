//! Fuzzes mgmtd's API request parsing: routing of the request target,
//! its query, and the typed JSON bodies with their checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = mgmt::api::fuzz::api_request(data);
});
