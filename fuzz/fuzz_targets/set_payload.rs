#![no_main]
//! See ../targets.rs: `set_payload`.

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::set_payload(data));
