//! `cargo +nightly fuzz run ffi_request`: see `fuzz/harness.rs`.
#![no_main]

extern crate fewstep as fewstep_runtime;

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = harness::ffi_request(data);
});
