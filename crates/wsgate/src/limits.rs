//! Limits that protect the gateway itself: how often one address may fail to authenticate.
//!
//! Kept exact (a sliding minute of timestamps per address) rather than approximated, so
//! `Retry-After` tells a client precisely when it may try again.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::reject::AuthError;

const WINDOW: Duration = Duration::from_secs(60);
/// Past this many tracked addresses, idle ones are swept on the next failure.
const SWEEP_AT: usize = 10_000;

/// Refused handshakes per remote IP in a sliding minute; past the limit, 429.
#[derive(Debug)]
pub struct FailureLimiter {
    per_min: usize,
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl FailureLimiter {
    pub fn new(per_min: u32) -> Self {
        Self {
            per_min: per_min.max(1) as usize,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(RateLimited)` while `ip` has used up its failures for the current window.
    pub fn check(&self, ip: IpAddr) -> Result<(), AuthError> {
        let Ok(mut map) = self.failures.lock() else {
            return Ok(());
        };
        let Some(times) = map.get_mut(&ip) else {
            return Ok(());
        };
        let now = Instant::now();
        prune(times, now);
        if times.len() < self.per_min {
            return Ok(());
        }
        // The window reopens when the oldest failure leaves it.
        let wait = times
            .front()
            .map(|t| WINDOW.saturating_sub(now.duration_since(*t)))
            .unwrap_or_default();
        Err(AuthError::RateLimited {
            retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
        })
    }

    /// Counts one refused handshake against `ip`.
    pub fn record(&self, ip: IpAddr) {
        let Ok(mut map) = self.failures.lock() else {
            return;
        };
        let now = Instant::now();
        if map.len() >= SWEEP_AT {
            map.retain(|_, times| {
                prune(times, now);
                !times.is_empty()
            });
        }
        let times = map.entry(ip).or_default();
        prune(times, now);
        times.push_back(now);
        // Only the newest `per_min` matter to the decision.
        while times.len() > self.per_min {
            times.pop_front();
        }
    }
}

fn prune(times: &mut VecDeque<Instant>, now: Instant) {
    while times
        .front()
        .is_some_and(|t| now.duration_since(*t) >= WINDOW)
    {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_after_n_failures_per_address() {
        let l = FailureLimiter::new(3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(l.check(a).is_ok());
            l.record(a);
        }
        match l.check(a) {
            Err(AuthError::RateLimited { retry_after_secs }) => {
                assert!((59..=60).contains(&retry_after_secs))
            }
            other => panic!("expected RateLimited, got {other:?}"),
        }
        assert!(l.check(b).is_ok());
    }
}
