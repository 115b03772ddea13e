//! Replays every input kept under `fuzz/corpus/<target>/` through the fuzz targets' own
//! bodies (`fuzz/targets.rs`), on stable: whatever a fuzzer once found stays fixed.

#[path = "../../../fuzz/targets.rs"]
mod targets;

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        run(&data);
        n += 1;
    }
    assert!(n > 0, "no corpus for {target}");
}

#[test]
fn sources_corpus() {
    replay("sources", targets::sources);
}

#[test]
fn jwt_corpus() {
    replay("jwt", targets::jwt);
}

#[test]
fn config_corpus() {
    replay("config", targets::config);
}

#[test]
fn pubsub_frames_corpus() {
    replay("pubsub_frames", targets::pubsub_frames);
}

#[test]
fn upstream_answer_corpus() {
    replay("upstream_answer", targets::upstream_answer);
}

#[test]
fn upstream_frames_corpus() {
    replay("upstream_frames", targets::upstream_frames);
}

#[test]
fn provider_answers_corpus() {
    replay("provider_answers", targets::provider_answers);
}

#[test]
fn set_payload_corpus() {
    replay("set_payload", targets::set_payload);
}
