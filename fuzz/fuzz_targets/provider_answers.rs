#![no_main]
//! See ../targets.rs: `provider_answers`.

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::provider_answers(data));
