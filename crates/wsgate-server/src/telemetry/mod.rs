//! `[telemetry]`: the library's spans (handshake, refresh, re-check, upstream dial) exported to
//! an OpenTelemetry collector over OTLP/HTTP (protobuf, `POST {otlp_endpoint}/v1/traces`).
//!
//! A span is queued by the task that finished it (one lock, one push: a handshake never waits
//! on the collector) and sent by one background task in batches ([`BATCH_MAX`] spans or
//! [`BATCH_WAIT`]). At most [`BUFFER_MAX`] spans wait; past it the oldest are dropped and
//! counted, as a batch the collector refuses is: traces are a diagnosis, not a record, so
//! nothing is retried. Without `[telemetry]` none of this exists and no span is made.

mod otlp;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use wsgate::trace::{Span, Tracer};

use crate::config::TelemetryConfig;

/// Spans sent in one request, at most.
const BATCH_MAX: usize = 512;
/// How long a span waits for others to share its request.
const BATCH_WAIT: Duration = Duration::from_secs(1);
/// Spans held while the collector is slow or away; the oldest go first.
const BUFFER_MAX: usize = 10_000;
/// One export, answer included.
const TIMEOUT: Duration = Duration::from_secs(10);
/// At shutdown, how long the last spans may take to leave.
const FLUSH: Duration = Duration::from_secs(2);

/// The exporter: its queue and where the queue goes.
pub struct Telemetry {
    queue: Mutex<VecDeque<Span>>,
    wake: Notify,
    stopping: CancellationToken,
    done: Notify,
    url: String,
    header: otlp::Header,
    client: reqwest::Client,
    /// `wsgate_telemetry_spans_dropped_total`, looked up once.
    dropped: metrics::Counter,
}

impl Telemetry {
    /// Builds the exporter and starts its task (inside a runtime).
    pub fn start(cfg: &TelemetryConfig, node: &str) -> anyhow::Result<Arc<Self>> {
        let telemetry = Arc::new(Self {
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            stopping: CancellationToken::new(),
            done: Notify::new(),
            url: cfg.traces_url(),
            header: otlp::Header::new(&cfg.service_name, node),
            client: reqwest::Client::builder()
                .timeout(TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            dropped: metrics::counter!("wsgate_telemetry_spans_dropped_total"),
        });
        tokio::spawn(telemetry.clone().export());
        Ok(telemetry)
    }

    /// The tracer one endpoint's authenticator hands its spans to: they are marked with the
    /// endpoint (`wsgate.endpoint`) and queued here.
    pub fn tracer(self: &Arc<Self>, endpoint: &str) -> Arc<dyn Tracer> {
        Arc::new(EndpointTracer {
            endpoint: endpoint.to_owned(),
            telemetry: self.clone(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Span>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a span; never waits.
    fn push(&self, span: Span) {
        let mut q = self.lock();
        if q.len() >= BUFFER_MAX {
            q.pop_front();
            self.dropped.increment(1);
        }
        q.push_back(span);
        let (first, full) = (q.len() == 1, q.len() >= BATCH_MAX);
        drop(q);
        if first || full {
            self.wake.notify_one();
        }
    }

    /// Sends what is queued, then stops the task: bounded by [`FLUSH`].
    pub async fn stop(&self) {
        let done = self.done.notified();
        self.stopping.cancel();
        let _ = tokio::time::timeout(FLUSH, done).await;
    }

    /// The export task: a batch when one is full or its first span has waited
    /// [`BATCH_WAIT`]; everything left once stopping.
    async fn export(self: Arc<Self>) {
        let mut failing = false;
        loop {
            let stopping = self.stopping.is_cancelled();
            let waiting = self.lock().len();
            if waiting == 0 {
                if stopping {
                    break;
                }
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = self.stopping.cancelled() => {}
                }
                continue;
            }
            if waiting < BATCH_MAX && !stopping {
                let deadline = tokio::time::Instant::now() + BATCH_WAIT;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => break,
                        _ = self.stopping.cancelled() => break,
                        _ = self.wake.notified() => {}
                    }
                    if self.lock().len() >= BATCH_MAX {
                        break;
                    }
                }
            }
            let batch: Vec<Span> = {
                let mut q = self.lock();
                let n = q.len().min(BATCH_MAX);
                q.drain(..n).collect()
            };
            let sent = batch.len() as u64;
            match self.send(&batch).await {
                Ok(()) => {
                    metrics::counter!("wsgate_telemetry_spans_exported_total").increment(sent);
                    if failing {
                        tracing::info!(target: "wsgate::telemetry", url = %self.url, "spans exported again");
                        failing = false;
                    }
                }
                Err(why) => {
                    self.dropped.increment(sent);
                    // Once per outage, not once per batch.
                    if !failing {
                        tracing::warn!(target: "wsgate::telemetry", spans = sent, "spans not exported (dropped until the collector answers): {why}");
                        failing = true;
                    }
                    if self.stopping.is_cancelled() {
                        break;
                    }
                }
            }
        }
        self.done.notify_waiters();
    }

    async fn send(&self, batch: &[Span]) -> Result<(), String> {
        let res = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
            .body(self.header.request(batch))
            .send()
            .await
            .map_err(|e| format!("{}: {e}", self.url))?;
        match res.status() {
            s if s.is_success() => Ok(()),
            s => Err(format!("{} answered {s}", self.url)),
        }
    }
}

/// One endpoint's view of the exporter.
struct EndpointTracer {
    endpoint: String,
    telemetry: Arc<Telemetry>,
}

impl Tracer for EndpointTracer {
    fn export(&self, mut span: Span) {
        span.attributes
            .push(("wsgate.endpoint", self.endpoint.as_str().into()));
        self.telemetry.push(span);
    }
}
