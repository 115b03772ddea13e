//! `max_connections_per_user` across nodes.
//!
//! Each subject has a Redis hash `<prefix>conns:<sub>` of node id → connections there, and
//! each node a liveness key `<prefix>node:<id>` refreshed by the health loop. Taking a slot
//! is one Lua script (atomic in Redis): sum the fields of live nodes (dropping those of dead
//! ones, so a crashed node's sockets stop counting once its key expires), refuse at the
//! limit, else count one more here. Giving a slot back is queued to a background task,
//! because it happens in `Drop`; the task gives back everything queued meanwhile in one
//! script call (one round trip for a burst of disconnects, not one each). While Redis is down each node enforces the limit on its own
//! sockets, and the resync after an outage rewrites this node's fields from its registry.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use wsgate::{Registry, SharedCounts};

use super::{Cluster, ClusterError, Lua, NODE_TTL_SECS};

const ACQUIRE: &str = r"
local total = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if fields[i] == ARGV[1] or redis.call('EXISTS', ARGV[3] .. fields[i]) == 1 then
    total = total + tonumber(fields[i + 1])
  else
    redis.call('HDEL', KEYS[1], fields[i])
  end
end
if total >= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
return 1
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

/// Most subjects given back in one script call.
const RELEASE_BATCH: usize = 512;

#[derive(Debug)]
pub struct RedisCounts {
    cluster: Arc<Cluster>,
    acquire: Lua,
    releases: UnboundedSender<String>,
}

impl RedisCounts {
    pub fn new(cluster: Arc<Cluster>) -> Self {
        let (releases, mut rx) = unbounded_channel::<String>();
        let worker = cluster.clone();
        tokio::spawn(async move {
            let release = Lua::new(RELEASE);
            let mut queued = Vec::with_capacity(RELEASE_BATCH);
            while rx.recv_many(&mut queued, RELEASE_BATCH).await > 0 {
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
            acquire: Lua::new(ACQUIRE),
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
            let key = self.cluster.key(&["conns:", sub]);
            let nodes = self.cluster.key(&["node:"]);
            let args = [self.cluster.node().to_owned(), max.to_string(), nodes];
            match self
                .cluster
                .eval::<i64>(&self.acquire, &[&key], &args)
                .await
            {
                Ok(taken) => Ok(taken == 1),
                Err(e) => {
                    tracing::warn!(target: "wsgate::cluster", error = %e, "cluster-wide connection count unavailable; local limit only");
                    Err(())
                }
            }
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
