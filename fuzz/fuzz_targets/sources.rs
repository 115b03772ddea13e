#![no_main]
//! See ../targets.rs: `sources`.

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::sources(data));
