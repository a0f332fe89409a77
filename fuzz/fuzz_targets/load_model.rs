//! `cargo +nightly fuzz run load_model`: see `fuzz/harness.rs`.
#![no_main]

extern crate fewstep as fewstep_runtime;

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = harness::load_model(data);
});
