//! Limits that protect the gateway itself: how often one address may fail to authenticate.
//!
//! Kept exact (a sliding minute of timestamps per address) rather than approximated, so
//! `Retry-After` tells a client precisely when it may try again. Everything here is bounded
//! and O(1) per request, because its input is whatever addresses an attacker can send from:
//! - IPv6 addresses count per `/64` (one customer's allocation; free to vary within it);
//! - at most [`MAX_TRACKED`] addresses are tracked, each with at most `per_min` times;
//! - idle addresses leave through an expiry queue (one entry per address), never a scan;
//! - an entry is small: times are 32-bit milliseconds since the limiter started, and an
//!   address that failed once (a flood from many addresses) keeps its one time inline.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::reject::AuthError;

const WINDOW: Duration = Duration::from_secs(60);
/// Most addresses tracked at once; past it the longest-idle one is forgotten first.
pub const MAX_TRACKED: usize = 32_768;

/// Refused handshakes per remote IP in a sliding minute; past the limit, 429.
#[derive(Debug)]
pub struct FailureLimiter {
    per_min: usize,
    /// Times are kept as milliseconds since this (`u32`: 49 days, far past any window).
    epoch: Instant,
    table: Mutex<Table>,
}

/// Milliseconds since the limiter's epoch.
type Ms = u32;
const WINDOW_MS: Ms = WINDOW.as_millis() as Ms;

/// One address's failures in the window, oldest first.
#[derive(Debug)]
enum Times {
    One(Ms),
    Many(VecDeque<Ms>),
}

impl Times {
    fn len(&self) -> usize {
        match self {
            Times::One(_) => 1,
            Times::Many(v) => v.len(),
        }
    }
    fn oldest(&self) -> Option<Ms> {
        match self {
            Times::One(t) => Some(*t),
            Times::Many(v) => v.front().copied(),
        }
    }
    fn newest(&self) -> Option<Ms> {
        match self {
            Times::One(t) => Some(*t),
            Times::Many(v) => v.back().copied(),
        }
    }
    /// Drops failures that left the window; `false` when none is left.
    fn prune(&mut self, now: Ms) -> bool {
        match self {
            Times::One(t) => now.saturating_sub(*t) < WINDOW_MS,
            Times::Many(v) => {
                while v
                    .front()
                    .is_some_and(|t| now.saturating_sub(*t) >= WINDOW_MS)
                {
                    v.pop_front();
                }
                !v.is_empty()
            }
        }
    }
    /// Adds a failure, keeping the newest `max`.
    fn push(&mut self, now: Ms, max: usize) {
        if max <= 1 {
            *self = Times::One(now);
            return;
        }
        let v = match self {
            Times::One(t) => {
                *self = Times::Many(VecDeque::from([*t]));
                match self {
                    Times::Many(v) => v,
                    Times::One(_) => return,
                }
            }
            Times::Many(v) => v,
        };
        v.push_back(now);
        while v.len() > max {
            v.pop_front();
        }
    }
}

#[derive(Debug, Default)]
struct Table {
    times: HashMap<IpAddr, Times>,
    /// Each tracked address once, with the time of the failure it was queued for, in that
    /// order: the front is the first candidate for removal. An address that failed again is
    /// moved lazily (re-queued with its newest failure when it reaches the front).
    queue: VecDeque<(IpAddr, Ms)>,
}

impl FailureLimiter {
    /// The failures an address may have per minute.
    pub fn per_min(&self) -> u32 {
        u32::try_from(self.per_min).unwrap_or(u32::MAX)
    }

    /// `per_min` failures per address per sliding minute (at least 1).
    pub fn new(per_min: u32) -> Self {
        Self {
            per_min: per_min.max(1) as usize,
            epoch: Instant::now(),
            table: Mutex::default(),
        }
    }

    fn now(&self) -> Ms {
        Ms::try_from(self.epoch.elapsed().as_millis()).unwrap_or(Ms::MAX)
    }

    /// `Err(RateLimited)` while `ip` has used up its failures for the current window.
    pub fn check(&self, ip: IpAddr) -> Result<(), AuthError> {
        let key = bucket(ip);
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let Some(times) = table.times.get_mut(&key) else {
            return Ok(());
        };
        let now = self.now();
        if !times.prune(now) || times.len() < self.per_min {
            return Ok(());
        }
        // The window reopens when the oldest failure leaves it.
        let wait_ms = times
            .oldest()
            .map_or(0, |t| WINDOW_MS.saturating_sub(now.saturating_sub(t)));
        Err(AuthError::RateLimited {
            retry_after_secs: u64::from(wait_ms.div_ceil(1000)).max(1),
        })
    }

    /// Counts one refused handshake against `ip`.
    pub fn record(&self, ip: IpAddr) {
        let key = bucket(ip);
        let now = self.now();
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.expire(now, 2);
        match table.times.get_mut(&key) {
            Some(times) => {
                if times.prune(now) {
                    // Only the newest `per_min` matter to the decision.
                    times.push(now, self.per_min);
                } else {
                    *times = Times::One(now);
                }
            }
            None => {
                while table.times.len() >= MAX_TRACKED {
                    table.evict_oldest();
                }
                table.queue.push_back((key, now));
                table.times.insert(key, Times::One(now));
            }
        }
    }

    /// Addresses tracked now (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .times
            .len()
    }
}

impl Table {
    /// Looks at up to `budget` addresses at the front of the queue: forgets those with no
    /// failure left in the window, re-queues those that failed again since they were queued,
    /// and stops at the first that is really the oldest. Constant work per call.
    fn expire(&mut self, now: Ms, budget: usize) {
        for _ in 0..budget {
            let Some(&(key, queued)) = self.queue.front() else {
                return;
            };
            let Some(times) = self.times.get_mut(&key) else {
                self.queue.pop_front(); // not reachable: keys leave the map and queue together
                continue;
            };
            let newest = if times.prune(now) {
                times.newest()
            } else {
                None
            };
            match newest {
                None => {
                    self.times.remove(&key);
                    self.queue.pop_front();
                }
                Some(newest) if newest > queued => {
                    self.queue.pop_front();
                    self.queue.push_back((key, newest));
                }
                Some(_) => return,
            }
        }
    }

    /// Forgets the address whose newest failure is the oldest of all (amortized O(1): each
    /// address is re-queued at most once per failure it recorded).
    fn evict_oldest(&mut self) {
        while let Some((key, queued)) = self.queue.pop_front() {
            match self.times.get(&key).and_then(Times::newest) {
                Some(newest) if newest > queued => self.queue.push_back((key, newest)),
                _ => {
                    self.times.remove(&key);
                    return;
                }
            }
        }
        self.times.clear(); // not reachable: every key is queued once
    }
}

/// What failures are counted under: the address, or an IPv6 address's `/64`.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
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

    #[test]
    fn ipv6_counts_per_slash_64() {
        let l = FailureLimiter::new(2);
        l.record("2001:db8:1:2::1".parse().unwrap());
        l.record("2001:db8:1:2:ffff::9".parse().unwrap());
        assert!(l.check("2001:db8:1:2::77".parse().unwrap()).is_err());
        assert!(l.check("2001:db8:1:3::1".parse().unwrap()).is_ok());
        assert_eq!(l.tracked(), 1);
    }

    #[test]
    fn the_table_is_bounded() {
        let l = FailureLimiter::new(5);
        for i in 0..(MAX_TRACKED as u32 + 1000) {
            l.record(IpAddr::V4(i.into()));
        }
        assert_eq!(l.tracked(), MAX_TRACKED);
        // The newest are still counted; the oldest were forgotten first.
        let newest = IpAddr::V4((MAX_TRACKED as u32 + 999).into());
        assert!(l.table.lock().unwrap().times.contains_key(&newest));
        assert!(
            !l.table
                .lock()
                .unwrap()
                .times
                .contains_key(&IpAddr::V4(0.into()))
        );
    }
}
