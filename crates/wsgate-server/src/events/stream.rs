//! Batches to a Redis Stream (cluster mode): `XADD {key_prefix}{redis_stream} MAXLEN ~ N *
//! event <json>` for each event in order, so a consumer group reads every node's events in
//! one place, and the stream never grows much past `buffer_max` entries. A failure part-way
//! retries the whole batch: consumers dedupe by `id`, as for webhooks.

use std::sync::Arc;

use super::sink::Batch;
use crate::cluster::Cluster;

pub struct Stream {
    cluster: Arc<Cluster>,
    key: String,
    max_len: usize,
}

impl Stream {
    pub fn new(cluster: Arc<Cluster>, key: String, max_len: usize) -> Self {
        Self {
            cluster,
            key,
            max_len,
        }
    }

    pub async fn send(&self, batch: &Batch) -> Result<(), String> {
        for event in &batch.events {
            let mut cmd = redis::cmd("XADD");
            cmd.arg(&self.key)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.max_len)
                .arg("*")
                .arg("event")
                .arg(&**event);
            self.cluster
                .query::<String>(&cmd)
                .await
                .map_err(|e| format!("XADD {}: {e}", self.key))?;
        }
        Ok(())
    }
}
