//! `max_connections_per_user` across nodes.
//!
//! Each subject has a Redis hash `<prefix>conns:<sub>` of node id → connections there, and
//! each node a liveness key `<prefix>node:<id>` refreshed by the health loop. Taking a slot
//! is one Lua script (atomic in Redis): sum the fields of live nodes (dropping those of dead
//! ones, so a crashed node's sockets stop counting once its key expires), refuse at the
//! limit, else count one more here. Handshakes that arrive while a call is in flight share
//! the next one, so a connection storm costs a round trip per batch, not per handshake (the
//! queue holds only handshakes in progress). Giving a slot back happens in `Drop`, so it is
//! queued to a background task, which gives back everything queued meanwhile in one call.
//! While Redis is down each node enforces the limit on its own sockets, and the resync
//! after an outage rewrites this node's fields from its registry.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::oneshot;
use wsgate::{Registry, SharedCounts};

use super::{Cluster, ClusterError, Lua, NODE_TTL_SECS};

/// KEYS: the subjects' count hashes (a subject may repeat); ARGV[1]: this node; ARGV[2]: the
/// liveness keys' prefix; ARGV[i + 2]: the limit for KEYS[i]. Returns 1 (taken) or 0 each.
const ACQUIRE: &str = r"
local out = {}
for k, key in ipairs(KEYS) do
  local total = 0
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    if fields[i] == ARGV[1] or redis.call('EXISTS', ARGV[2] .. fields[i]) == 1 then
      total = total + tonumber(fields[i + 1])
    else
      redis.call('HDEL', key, fields[i])
    end
  end
  if total >= tonumber(ARGV[k + 2]) then
    out[k] = 0
  else
    redis.call('HINCRBY', key, ARGV[1], 1)
    out[k] = 1
  end
end
return out
";

/// KEYS: the subjects' count hashes; ARGV[1]: this node; ARGV[i + 1]: slots to give back
/// for KEYS[i].
const RELEASE: &str = r"
for i, key in ipairs(KEYS) do
  if redis.call('HINCRBY', key, ARGV[1], -tonumber(ARGV[i + 1])) <= 0 then
    redis.call('HDEL', key, ARGV[1])
  end
end
return #KEYS
";

/// Most slots taken or given back in one script call.
const BATCH: usize = 512;

/// A handshake waiting for its slot.
struct Acquire {
    sub: String,
    max: usize,
    taken: oneshot::Sender<Result<bool, ()>>,
}

#[derive(Debug)]
pub struct RedisCounts {
    cluster: Arc<Cluster>,
    acquires: UnboundedSender<Acquire>,
    releases: UnboundedSender<String>,
}

/// Takes slots for every handshake queued while the previous call was in flight, in one
/// script call: under a connection storm, one round trip for many handshakes.
async fn take_slots(cluster: Arc<Cluster>, mut rx: UnboundedReceiver<Acquire>) {
    let acquire = Lua::new(ACQUIRE);
    let nodes = cluster.key(&["node:"]);
    let mut queued = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut queued, BATCH).await > 0 {
        let keys: Vec<String> = queued
            .iter()
            .map(|a| cluster.key(&["conns:", &a.sub]))
            .collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut args = Vec::with_capacity(queued.len() + 2);
        args.extend([cluster.node().to_owned(), nodes.clone()]);
        args.extend(queued.iter().map(|a| a.max.to_string()));
        let answers = match cluster.eval::<Vec<i64>>(&acquire, &keys, &args).await {
            Ok(taken) if taken.len() == queued.len() => {
                taken.into_iter().map(|t| Ok(t == 1)).collect()
            }
            Ok(_) => vec![Err(()); queued.len()],
            Err(e) => {
                tracing::warn!(target: "wsgate::cluster", error = %e, "cluster-wide connection count unavailable; local limit only");
                vec![Err(()); queued.len()]
            }
        };
        for (a, answer) in queued.drain(..).zip(answers) {
            let _ = a.taken.send(answer);
        }
    }
}

impl RedisCounts {
    pub fn new(cluster: Arc<Cluster>) -> Self {
        let (acquires, acquire_rx) = unbounded_channel::<Acquire>();
        tokio::spawn(take_slots(cluster.clone(), acquire_rx));
        let (releases, mut rx) = unbounded_channel::<String>();
        let worker = cluster.clone();
        tokio::spawn(async move {
            let release = Lua::new(RELEASE);
            let mut queued = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut queued, BATCH).await > 0 {
                let mut per_sub: HashMap<String, u64> = HashMap::with_capacity(queued.len());
                for sub in queued.drain(..) {
                    *per_sub.entry(sub).or_default() += 1;
                }
                let mut keys = Vec::with_capacity(per_sub.len());
                let mut args = Vec::with_capacity(per_sub.len() + 1);
                args.push(worker.node().to_owned());
                for (sub, n) in per_sub {
                    keys.push(worker.key(&["conns:", &sub]));
                    args.push(n.to_string());
                }
                let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                // Lost while Redis is down; the resync after the outage corrects it.
                let _ = worker.eval::<i64>(&release, &keys, &args).await;
            }
        });
        Self {
            cluster,
            acquires,
            releases,
        }
    }
}

impl SharedCounts for RedisCounts {
    fn acquire<'a>(
        &'a self,
        sub: &'a str,
        max: usize,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, ()>> + Send + 'a>> {
        Box::pin(async move {
            if !self.cluster.is_up() {
                return Err(());
            }
            let (taken, answer) = oneshot::channel();
            let sub = sub.to_owned();
            self.acquires
                .send(Acquire { sub, max, taken })
                .map_err(drop)?;
            answer.await.unwrap_or(Err(()))
        })
    }

    fn release(&self, sub: &str) {
        let _ = self.releases.send(sub.to_owned());
    }
}

/// Says this node is alive (its connection counts count).
pub async fn heartbeat(cluster: &Cluster) -> Result<(), ClusterError> {
    cluster
        .query::<()>(
            redis::cmd("SET")
                .arg(cluster.key(&["node:", cluster.node()]))
                .arg(1)
                .arg("EX")
                .arg(NODE_TTL_SECS),
        )
        .await
}

/// Rewrites this node's counts from its registry (after an outage, counts may have drifted).
pub async fn resync(cluster: &Cluster, registry: &Registry) -> Result<(), ClusterError> {
    let mut pipe = redis::pipe();
    for key in cluster.scan(&cluster.key(&["conns:*"])).await? {
        pipe.cmd("HDEL").arg(key).arg(cluster.node()).ignore();
    }
    for (sub, n) in registry.counts() {
        pipe.cmd("HSET")
            .arg(cluster.key(&["conns:", &sub]))
            .arg(cluster.node())
            .arg(n)
            .ignore();
    }
    cluster.exec(&pipe).await
}
