//! `max_connections_per_user` across nodes.
//!
//! Each subject has a Redis hash `<prefix>conns:<sub>` of node id → connections there, and
//! each node a liveness key `<prefix>node:<id>` refreshed by the health loop. Taking a slot
//! is atomic in Redis (a Lua script): sum the fields of live nodes (dropping those of dead
//! ones, so a crashed node's sockets stop counting once its key expires), refuse at the
//! limit, else count one more here. One task does all of a node's counting: whatever was
//! queued while its previous call was in flight — slots given back (from `Drop`, which must
//! not wait) and handshakes waiting for a slot — goes to Redis as one script call, releases
//! first. Under churn that is one round trip for many connects and disconnects, not one
//! each. The queue holds only handshakes in progress and releases not yet sent. While Redis
//! is down each node enforces the limit on its own sockets, and the resync after an outage
//! rewrites this node's fields from its registry.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::oneshot;
use wsgate::{Registry, SharedCounts};

use super::{Cluster, ClusterError, Lua, NODE_TTL_SECS};

/// One call for everything queued: first the slots given back, then the ones asked for.
/// KEYS: R count hashes to give back to, then the count hashes asked from (a subject may
/// repeat); ARGV[1]: this node; ARGV[2]: the liveness keys' prefix; ARGV[3]: R; ARGV[3 + i]
/// (i ≤ R): slots to give back to KEYS[i]; ARGV[3 + i] (i > R): the limit for KEYS[i].
/// Returns 1 (taken) or 0 per slot asked for.
const COUNT: &str = r"
local node, nodes, r = ARGV[1], ARGV[2], tonumber(ARGV[3])
for i = 1, r do
  if redis.call('HINCRBY', KEYS[i], node, -tonumber(ARGV[3 + i])) <= 0 then
    redis.call('HDEL', KEYS[i], node)
  end
end
local out = {}
for k = r + 1, #KEYS do
  local key, total = KEYS[k], 0
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    if fields[i] == node or redis.call('EXISTS', nodes .. fields[i]) == 1 then
      total = total + tonumber(fields[i + 1])
    else
      redis.call('HDEL', key, fields[i])
    end
  end
  if total >= tonumber(ARGV[3 + k]) then
    out[k - r] = 0
  else
    redis.call('HINCRBY', key, node, 1)
    out[k - r] = 1
  end
end
return out
";

/// Most queued operations in one script call.
const BATCH: usize = 512;

/// What the counting task is asked to do.
enum Op {
    /// A handshake waiting for its slot.
    Acquire {
        sub: String,
        max: usize,
        taken: oneshot::Sender<Result<bool, ()>>,
    },
    /// A connection gone (from `Drop`: never waits).
    Release(String),
}

#[derive(Debug)]
pub struct RedisCounts {
    cluster: Arc<Cluster>,
    ops: UnboundedSender<Op>,
}

/// Runs everything queued while the previous call was in flight as one script call: under a
/// connection storm or churn, one round trip serves many connects and disconnects.
async fn count(cluster: Arc<Cluster>, mut rx: UnboundedReceiver<Op>) {
    let script = Lua::new(COUNT);
    let nodes = cluster.key(&["node:"]);
    let mut queued = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut queued, BATCH).await > 0 {
        let mut released: HashMap<String, u64> = HashMap::new();
        let mut waiting = Vec::with_capacity(queued.len());
        for op in queued.drain(..) {
            match op {
                Op::Release(sub) => *released.entry(sub).or_default() += 1,
                Op::Acquire { sub, max, taken } => waiting.push((sub, max, taken)),
            }
        }
        let mut keys = Vec::with_capacity(released.len() + waiting.len());
        let mut args = Vec::with_capacity(keys.capacity() + 3);
        args.extend([cluster.node().to_owned(), nodes.clone()]);
        args.push(released.len().to_string());
        for (sub, n) in released {
            keys.push(cluster.key(&["conns:", &sub]));
            args.push(n.to_string());
        }
        for (sub, max, _) in &waiting {
            keys.push(cluster.key(&["conns:", sub]));
            args.push(max.to_string());
        }
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        // Releases lost while Redis is down are corrected by the resync after the outage.
        let answers = match cluster.eval::<Vec<i64>>(&script, &keys, &args).await {
            Ok(taken) if taken.len() == waiting.len() => {
                taken.into_iter().map(|t| Ok(t == 1)).collect()
            }
            Ok(_) => vec![Err(()); waiting.len()],
            Err(e) => {
                if !waiting.is_empty() {
                    tracing::warn!(target: "wsgate::cluster", error = %e, "cluster-wide connection count unavailable; local limit only");
                }
                vec![Err(()); waiting.len()]
            }
        };
        for ((_, _, taken), answer) in waiting.into_iter().zip(answers) {
            let _ = taken.send(answer);
        }
    }
}

impl RedisCounts {
    pub fn new(cluster: Arc<Cluster>) -> Self {
        let (ops, rx) = unbounded_channel::<Op>();
        tokio::spawn(count(cluster.clone(), rx));
        Self { cluster, ops }
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
            self.ops
                .send(Op::Acquire { sub, max, taken })
                .map_err(drop)?;
            answer.await.unwrap_or(Err(()))
        })
    }

    fn release(&self, sub: &str) {
        let _ = self.ops.send(Op::Release(sub.to_owned()));
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
