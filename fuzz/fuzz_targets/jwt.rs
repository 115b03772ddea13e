#![no_main]
//! See ../targets.rs: `jwt`.

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::jwt(data));
