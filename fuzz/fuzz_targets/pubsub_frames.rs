#![no_main]
//! See ../targets.rs: `pubsub_frames`.

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::pubsub_frames(data));
