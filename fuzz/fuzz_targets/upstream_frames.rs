#![no_main]
//! See ../targets.rs: `upstream_frames`.

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::upstream_frames(data));
