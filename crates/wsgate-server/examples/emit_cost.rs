//! What one connection's events cost the task that emits them: `connected` + `closed` for
//! N sessions through the `[events]` observer, webhook pointed at a dead port (the queue
//! fills to `buffer_max`, then drops: the worst case), and the same with a buffer that never
//! fills. Prints ns per session (both events).
//!
//!   cargo run --release -p wsgate-server --example emit_cost   (figures: BENCHMARKS.md)
use std::time::{Duration, Instant};

use wsgate::{Ended, Identity, SourceKind, Verified};
use wsgate_server::config::EventsConfig;
use wsgate_server::events::Events;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let n = 200_000;
    for buffer_max in [1_000_000usize, 10_000] {
        let cfg: EventsConfig = toml::from_str(&format!(
            "webhook_url = \"http://127.0.0.1:9/events\"\nwebhook_secret_env = \"X\"\nbuffer_max = {buffer_max}\n"
        ))?;
        let events = Events::start(&cfg, "node-1".into(), Some(vec![7; 32]), None)?;
        let observer = events.observer("/echo");
        let verified = Verified {
            sub: "alice@example.com".into(),
            expires_at: Some(2_000_000_000),
            ..Verified::default()
        };
        let identity = Identity::new(verified, SourceKind::Bearer, "jwt");
        let ended = Ended {
            code: 1000,
            reason: "client closed",
            lasted: Duration::from_millis(1234),
            cause: None,
        };
        let started = Instant::now();
        for _ in 0..n {
            observer.connected(&identity);
            observer.closed(&identity, ended);
        }
        let per = started.elapsed().as_nanos() as f64 / n as f64;
        println!("buffer_max {buffer_max}: {per:.0} ns per session (connected + closed)");
    }
    Ok(())
}
