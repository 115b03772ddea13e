//! One destination's queue and the task that drains it: events wait here (at most
//! `buffer_max`, the oldest dropped past it and reported by a `gap` event) until a batch is
//! full (`batch_max`) or its first event has waited `batch_ms`; a batch that fails is sent
//! again, unchanged, with backoff (1 s doubling to 5 min) until it is taken — at least once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::stream::Stream;
use super::webhook::Webhook;
use super::{Events, Field};
use crate::config::EventsConfig;

const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(300);

/// Where a sink's batches go.
pub enum Target {
    Webhook(Box<Webhook>),
    Stream(Stream),
}

impl Target {
    async fn send(&self, batch: &Batch) -> Result<(), String> {
        match self {
            Self::Webhook(w) => w.send(batch).await,
            Self::Stream(s) => s.send(batch).await,
        }
    }
}

/// An event as queued: its `seq` and its text.
#[derive(Clone)]
pub struct Entry {
    pub seq: u64,
    pub text: Arc<str>,
}

/// Events taken together: sent and retried as one, under the first event's id.
pub struct Batch {
    pub id: String,
    pub events: Vec<Arc<str>>,
}

/// One destination's waiting events.
pub struct Sink {
    name: &'static str,
    queue: Mutex<Queue>,
    wake: Notify,
    batch_max: usize,
    buffer_max: usize,
    /// `wsgate_events_dropped_total{sink}`, looked up once: a full buffer drops on every push.
    dropped: metrics::Counter,
}

#[derive(Default)]
struct Queue {
    events: VecDeque<Entry>,
    /// Since when the oldest waiting event waits.
    since: Option<Instant>,
    /// The `seq` range dropped since the last batch, reported by a `gap` event.
    gap: Option<(u64, u64)>,
}

impl Sink {
    pub fn new(name: &'static str, cfg: &EventsConfig) -> Self {
        Self {
            name,
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            batch_max: cfg.batch_max,
            buffer_max: cfg.buffer_max,
            dropped: metrics::counter!("wsgate_events_dropped_total", "sink" => name),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Events waiting.
    pub fn waiting(&self) -> usize {
        self.lock().events.len()
    }

    /// Queues an event; past `buffer_max` the oldest is dropped and counted. Never waits.
    pub fn push(&self, event: Entry) {
        let mut q = self.lock();
        if q.events.len() >= self.buffer_max
            && let Some(dropped) = q.events.pop_front()
        {
            let seq = dropped.seq;
            q.gap = Some(match q.gap {
                Some((from, _)) => (from, seq),
                None => (seq, seq),
            });
            self.dropped.increment(1);
        }
        q.events.push_back(event);
        q.since.get_or_insert_with(Instant::now);
        let full = q.events.len() >= self.batch_max;
        let first = q.events.len() == 1;
        drop(q);
        if full || first {
            self.wake.notify_one();
        }
    }

    /// Waits until a batch is due: full, or its first event has waited `batch`, or the
    /// server stops; `false` when stopping with nothing left.
    async fn due(&self, batch: Duration, events: &Events) -> bool {
        loop {
            let (waiting, since) = {
                let q = self.lock();
                (q.events.len() + usize::from(q.gap.is_some()), q.since)
            };
            let stopping = events.stopping.is_cancelled();
            match since {
                _ if waiting == 0 && stopping => return false,
                Some(since) if waiting > 0 => {
                    let at = since + batch;
                    if waiting >= self.batch_max || stopping || Instant::now() >= at {
                        return true;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.wake.notified() => {}
                        _ = events.stopping.cancelled() => {}
                    }
                }
                _ => tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = events.stopping.cancelled() => {}
                },
            }
        }
    }

    /// The next batch: a `gap` event first if events were dropped, then up to `batch_max`.
    fn take(&self, events: &Events) -> Batch {
        let mut q = self.lock();
        let mut batch = Vec::with_capacity(self.batch_max.min(q.events.len() + 1));
        if let Some((from, to)) = q.gap.take() {
            // Numbered as the last event it stands for (never delivered, so its id is free):
            // the sequence a consumer sees still only goes up.
            let fields = [("from_seq", Field::Num(from)), ("to_seq", Field::Num(to))];
            batch.push(events.build_as(to, "gap", &fields));
        }
        let n = self.batch_max.min(q.events.len());
        batch.extend(q.events.drain(..n));
        q.since = (!q.events.is_empty()).then(Instant::now);
        drop(q);
        Batch {
            id: batch.first().map(|e| events.id(e.seq)).unwrap_or_default(),
            events: batch.into_iter().map(|e| e.text).collect(),
        }
    }
}

/// Sends `sink`'s batches to `target` until the server stops and the sink is empty (or,
/// once stopping, a send fails: the shutdown does not wait for a dead destination).
pub async fn deliver(sink: Arc<Sink>, target: Target, events: Arc<Events>, batch: Duration) {
    while sink.due(batch, &events).await {
        let next = sink.take(&events);
        let mut wait = FIRST_RETRY;
        loop {
            match target.send(&next).await {
                Ok(()) => {
                    metrics::counter!("wsgate_events_delivered_total", "sink" => sink.name)
                        .increment(next.events.len() as u64);
                    break;
                }
                Err(why) => {
                    metrics::counter!("wsgate_events_failures_total", "sink" => sink.name)
                        .increment(1);
                    tracing::warn!(target: "wsgate::events", sink = sink.name, batch = %next.id, events = next.events.len(), retry_in = ?wait, "events not delivered: {why}");
                    if events.stopping.is_cancelled() {
                        return;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = events.stopping.cancelled() => {}
                    }
                    wait = (wait * 2).min(LAST_RETRY);
                }
            }
        }
    }
}
