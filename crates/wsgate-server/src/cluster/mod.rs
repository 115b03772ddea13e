//! Cluster mode: many nodes, one Redis, and nothing home-made between them.
//!
//! With `cluster.redis_url` set, everything one node is told that others must act on goes
//! through Redis: channel messages (`broker`), admin disconnects and revocations
//! (`control`), single-use tickets (`tickets`) and per-user connection counts (`counts`).
//! [`Cluster`] is the one Redis connection they share (RESP3, multiplexed: commands and
//! pub/sub pushes on one socket) plus the node's view of whether Redis is reachable.
//!
//! Failure model: Redis down → the node keeps serving its own clients (local delivery, echo,
//! handshakes with stateless credentials, revocations from its local copy), `/readyz` answers
//! 503, and operations that need the cluster to be correct (tickets, new revocations,
//! cross-node delivery) fail with [`ClusterError::Unavailable`] instead of falling back to
//! something that would break single use. The health loop notices Redis coming back,
//! resynchronises (subscriptions, revocations in both directions, connection counts) and only
//! then reports ready again: no restart needed. Pub/sub is at most once: messages published
//! while a node was cut off are not replayed to it.
//!
//! Every Redis key starts with `cluster.key_prefix` so deployments can share one Redis.
//!
//! Past one Redis (`cluster.redis_cluster`, a Redis Cluster): the same operations on a
//! cluster connection (redis-rs, RESP3, resubscribing by itself after a failover). Every
//! key carries the prefix as a hash tag (`{wsgate:}ticket:…`), so all of a deployment's keys
//! live in one slot and every script, MGET and pipeline stays within it; channels are not
//! tagged, so sharded pub/sub (SPUBLISH/SSUBSCRIBE) spreads them over the shards, which is
//! where the traffic is. A master failover looks like an outage: not ready until the
//! connection and the resync succeed again.

pub mod broker;
pub mod control;
pub mod counts;
pub mod tickets;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{FromRedisValue, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::mpsc::UnboundedReceiver;
use wsgate::{Registry, Revocations, Revoked};

use crate::config::RedisBackend;
use crate::store::Store;

/// The longest any Redis operation may take before the caller gets `Unavailable`.
const OP_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the health loop pings Redis (and so how fast an outage or a return is noticed).
const HEALTH_EVERY: Duration = Duration::from_millis(500);
/// A node's liveness key lives this long; it is refreshed every second (every
/// [`HEARTBEAT_ROUNDS`] health rounds). Counts of a node whose key expired (it crashed) are
/// ignored by the per-user limit, so the users of a killed node are admitted elsewhere
/// within seconds; a live node would have to miss three heartbeats in a row to be ignored.
const NODE_TTL_SECS: u64 = 4;
const HEARTBEAT_ROUNDS: u64 = 2;

/// What went wrong talking to Redis; callers turn it into 503 or an `unavailable` frame.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("the cluster's Redis is unreachable")]
    Unavailable,
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis did not answer within {OP_TIMEOUT:?}")]
    Timeout,
}

/// Parses `cluster.redis_url` (`redis://`, `rediss://`, `redis+unix://`, `unix://`) and asks
/// for RESP3, which pub/sub on a multiplexed connection needs.
pub fn client(url: &str) -> Result<redis::Client, redis::RedisError> {
    let info = url.into_connection_info()?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    redis::Client::open(info.set_redis_settings(settings))
}

/// Where a Redis URL points, for logs: address only, never the password.
pub fn describe(url: &str) -> String {
    url.into_connection_info()
        .map(|i| i.addr().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The backend for logs and `check-config`: addresses only.
pub fn describe_backend(backend: RedisBackend<'_>) -> String {
    match backend {
        RedisBackend::Single(url) => format!("redis at {}", describe(url)),
        RedisBackend::Cluster(seeds) => format!(
            "Redis Cluster via {}",
            seeds
                .iter()
                .map(|u| describe(u))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The connection: one Redis (a reconnecting manager), or a Redis Cluster (connected on
/// first use by the health loop, then reconnecting and resubscribing by itself). One per
/// process, so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Conn {
    Single(ConnectionManager),
    Cluster {
        client: redis::cluster::ClusterClient,
        conn: tokio::sync::OnceCell<ClusterConnection>,
        /// The slot every key of this deployment hashes to (its `{prefix}` tag).
        slot: u16,
    },
}

/// A Lua script and its SHA1, for [`Cluster::eval`].
pub struct Lua {
    code: &'static str,
    hash: String,
}

impl Lua {
    pub fn new(code: &'static str) -> Self {
        Self {
            code,
            hash: redis::Script::new(code).get_hash().to_owned(),
        }
    }
}

impl std::fmt::Debug for Lua {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hash)
    }
}

/// A clone of the connection, of either kind, to run a command or a script on.
enum Live {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Live {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Live::Single(c) => c.req_packed_command(cmd),
            Live::Cluster(c) => c.req_packed_command(cmd),
        }
    }
    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Live::Single(c) => c.req_packed_commands(cmd, offset, count),
            Live::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }
    fn get_db(&self) -> i64 {
        match self {
            Live::Single(c) => c.get_db(),
            Live::Cluster(c) => c.get_db(),
        }
    }
}

/// The shared Redis connection and this node's view of it.
pub struct Cluster {
    conn: Conn,
    /// The address, for logs (no credentials).
    addr: String,
    prefix: String,
    /// Random per process: names this node's connection counts and its control messages.
    node: String,
    up: AtomicBool,
    /// A connection dropped (a Redis restart, a Redis Cluster failover): subscriptions may be
    /// lost even if Redis answered every health check, so the next round resynchronises.
    stale: AtomicBool,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node)
            .field("prefix", &self.prefix)
            .field("up", &self.is_up())
            .finish()
    }
}

impl Cluster {
    /// Builds the connection without waiting for Redis: a node starts even when Redis is
    /// down, and the health loop connects it. Pushes (channel messages) arrive on the
    /// returned receiver, for [`start`].
    pub fn new(
        backend: RedisBackend<'_>,
        prefix: &str,
    ) -> Result<(Arc<Self>, UnboundedReceiver<PushInfo>), ClusterError> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (conn, addr, prefix) = match backend {
            RedisBackend::Single(url) => {
                let config = ConnectionManagerConfig::new()
                    .set_push_sender(tx)
                    .set_automatic_resubscription()
                    .set_connection_timeout(Some(OP_TIMEOUT))
                    .set_response_timeout(Some(OP_TIMEOUT))
                    // Short reconnect attempts: the health loop starts a new one every round.
                    .set_number_of_retries(2)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(250));
                let conn = ConnectionManager::new_lazy_with_config(client(url)?, config)?;
                (Conn::Single(conn), describe(url), prefix.to_owned())
            }
            RedisBackend::Cluster(seeds) => {
                let client = redis::cluster::ClusterClientBuilder::new(seeds.to_vec())
                    .use_protocol(ProtocolVersion::RESP3)
                    .push_sender(tx)
                    .connection_timeout(OP_TIMEOUT / 4)
                    .response_timeout(OP_TIMEOUT / 4)
                    // Retries (after a slot refresh, e.g. when a master failed over) must
                    // fit in one call's OP_TIMEOUT, or every call gives up before them.
                    .retries(3)
                    .min_retry_wait(20)
                    .max_retry_wait(200)
                    .build()?;
                // One hash tag for every key of the deployment: one slot.
                let tag = format!("{{{prefix}}}");
                let conn = Conn::Cluster {
                    client,
                    conn: tokio::sync::OnceCell::new(),
                    slot: slot_of(prefix.as_bytes()),
                };
                (conn, describe_backend(backend), tag)
            }
        };
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|_| ClusterError::Unavailable)?;
        let node = wsgate::identity::hex(&id);
        Ok((
            Arc::new(Self {
                conn,
                addr,
                prefix,
                node,
                up: AtomicBool::new(false),
                stale: AtomicBool::new(false),
            }),
            rx,
        ))
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether Redis answered the last health check (and the node has resynchronised).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// A key (or pub/sub channel) in this deployment's namespace.
    pub fn key(&self, parts: &[&str]) -> String {
        let mut k = self.prefix.clone();
        for p in parts {
            k.push_str(p);
        }
        k
    }

    /// Whether Redis answers: one Redis, or on a Redis Cluster the master serving the
    /// deployment's slot (a PING to every node would fail while a dead master is still
    /// listed, even after its replica took over).
    async fn ping(&self) -> bool {
        match &self.conn {
            Conn::Single(_) => self.query::<String>(&redis::cmd("PING")).await.is_ok(),
            Conn::Cluster { slot, .. } => match self.cluster_connection().await {
                Ok(mut conn) => bounded(conn.route_command(redis::cmd("PING"), slot_route(*slot)))
                    .await
                    .is_ok(),
                Err(_) => false,
            },
        }
    }

    /// A pub/sub channel in this deployment's namespace. Unlike keys, never hash-tagged, so
    /// a Redis Cluster spreads channels over its shards.
    pub fn channel(&self, parts: &[&str]) -> String {
        let mut c = match &self.conn {
            Conn::Single(_) => self.prefix.clone(),
            Conn::Cluster { .. } => self.prefix.trim_matches(['{', '}']).to_owned(),
        };
        for p in parts {
            c.push_str(p);
        }
        c
    }

    /// The command that publishes on a channel: sharded pub/sub on a Redis Cluster.
    pub fn publish_command(&self) -> &'static str {
        match self.conn {
            Conn::Single(_) => "PUBLISH",
            Conn::Cluster { .. } => "SPUBLISH",
        }
    }

    /// A connection to run one command on (a clone: both kinds multiplex).
    async fn connection(&self) -> Result<Live, ClusterError> {
        match &self.conn {
            Conn::Single(m) => Ok(Live::Single(m.clone())),
            Conn::Cluster { .. } => Ok(Live::Cluster(self.cluster_connection().await?)),
        }
    }

    async fn cluster_connection(&self) -> Result<ClusterConnection, ClusterError> {
        let Conn::Cluster { client, conn, .. } = &self.conn else {
            return Err(ClusterError::Unavailable);
        };
        conn.get_or_try_init(|| bounded(client.get_async_connection()))
            .await
            .cloned()
    }

    /// Runs one command, bounded by [`OP_TIMEOUT`].
    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, ClusterError> {
        let mut conn = self.connection().await?;
        bounded(cmd.query_async(&mut conn)).await
    }

    /// Runs a Lua script on one key with `args` (EVALSHA; on NOSCRIPT, loads it where the
    /// key lives and tries again), each call bounded by [`OP_TIMEOUT`]. redis-rs's own
    /// fallback sends SCRIPT LOAD to every master of a Redis Cluster, which fails while a
    /// dead master is still listed after a failover.
    pub async fn eval<T: FromRedisValue>(
        &self,
        lua: &Lua,
        keys: &[&str],
        args: &[String],
    ) -> Result<T, ClusterError> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&lua.hash).arg(keys.len()).arg(keys).arg(args);
        match self.query(&cmd).await {
            Err(ClusterError::Redis(e))
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                let load = redis::cmd("SCRIPT").arg("LOAD").arg(lua.code).to_owned();
                match &self.conn {
                    Conn::Single(_) => self.query::<String>(&load).await.map(drop)?,
                    Conn::Cluster { slot, .. } => {
                        let mut conn = self.cluster_connection().await?;
                        bounded(conn.route_command(load, slot_route(*slot))).await?;
                    }
                }
                self.query(&cmd).await
            }
            other => other,
        }
    }

    /// Like [`query`](Self::query), but refused at once while the node knows Redis is down.
    pub async fn query_up<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, ClusterError> {
        if !self.is_up() {
            return Err(ClusterError::Unavailable);
        }
        self.query(cmd).await
    }

    async fn subscribe(&self, channel: &str) -> Result<(), ClusterError> {
        match &self.conn {
            Conn::Single(m) => bounded(m.clone().subscribe(channel)).await,
            Conn::Cluster { .. } => {
                bounded(self.cluster_connection().await?.ssubscribe(channel)).await
            }
        }
    }

    async fn unsubscribe(&self, channel: &str) -> Result<(), ClusterError> {
        match &self.conn {
            Conn::Single(m) => bounded(m.clone().unsubscribe(channel)).await,
            Conn::Cluster { .. } => {
                bounded(self.cluster_connection().await?.sunsubscribe(channel)).await
            }
        }
    }

    /// Stores revocations under their own expiry, so Redis forgets them when the tokens would
    /// have expired anyway.
    pub async fn store_revocations(&self, entries: &[Revoked]) -> Result<(), ClusterError> {
        let now = wsgate::verify::now_unix();
        let mut pipe = redis::pipe();
        for r in entries.iter().filter(|r| r.until() > now) {
            let key = match r {
                Revoked::Jti { jti, .. } => self.key(&["revoked:jti:", jti]),
                Revoked::Subject { sub, .. } => self.key(&["revoked:sub:", sub]),
                Revoked::Claim { claim, value, .. } => {
                    let pair = serde_json::json!([claim, value]).to_string();
                    self.key(&["revoked:claim:", &pair])
                }
            };
            let value = serde_json::to_string(r).map_err(|_| ClusterError::Unavailable)?;
            pipe.cmd("SET")
                .arg(key)
                .arg(value)
                .arg("EXAT")
                // Redis refuses expiries past ~2^63 ms; no revocation needs to outlive 9999.
                .arg(r.until().min(wsgate::verify::MAX_UNIX_TIME))
                .ignore();
        }
        self.exec(&pipe).await
    }

    /// Runs a pipeline of commands whose answers are not needed, bounded by [`OP_TIMEOUT`].
    async fn exec(&self, pipe: &redis::Pipeline) -> Result<(), ClusterError> {
        if pipe.cmd_iter().next().is_none() {
            return Ok(());
        }
        let mut conn = self.connection().await?;
        bounded(pipe.query_async::<()>(&mut conn)).await
    }

    /// Every revocation Redis holds for this deployment.
    async fn load_revocations(&self) -> Result<Vec<Revoked>, ClusterError> {
        let keys = self.scan(&self.key(&["revoked:*"])).await?;
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let values: Vec<Option<String>> = self.query(redis::cmd("MGET").arg(chunk)).await?;
            out.extend(
                values
                    .iter()
                    .flatten()
                    .filter_map(|v| serde_json::from_str(v).ok()),
            );
        }
        Ok(out)
    }

    /// All keys matching `pattern` (SCAN, so Redis is never blocked by a large keyspace).
    async fn scan(&self, pattern: &str) -> Result<Vec<String>, ClusterError> {
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let cmd = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .to_owned();
            let (next, batch): (u64, Vec<String>) = match &self.conn {
                Conn::Single(_) => self.query(&cmd).await?,
                // Every key lives in the prefix's slot: scan the master that owns it.
                Conn::Cluster { slot, .. } => {
                    let mut conn = self.cluster_connection().await?;
                    let value = bounded(conn.route_command(cmd, slot_route(*slot))).await?;
                    redis::from_redis_value(value).map_err(|_| ClusterError::Unavailable)?
                }
            };
            keys.extend(batch);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }
}

/// Routes a command to the master serving `slot`.
fn slot_route(slot: u16) -> redis::cluster_routing::RoutingInfo {
    use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
        slot,
        SlotAddr::Master,
    )))
}

/// The Redis Cluster slot of a hash tag: CRC16/XMODEM mod 16384 (Redis Cluster spec).
pub fn slot_of(tag: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in tag {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// Waits for a Redis call at most [`OP_TIMEOUT`]: no caller hangs on an unresponsive Redis.
async fn bounded<T>(
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(OP_TIMEOUT, call).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(ClusterError::Timeout),
    }
}

/// What the cluster acts on at this node.
pub struct Parts {
    pub registry: Arc<Registry>,
    pub revocations: Arc<Revocations>,
    pub broker: Arc<broker::ClusterBroker>,
    pub store: Arc<Store>,
    pub leeway_secs: u64,
}

/// Starts the push dispatcher and the health loop, and waits (at most `first_wait`) for the
/// first successful synchronisation, so a node with a reachable Redis starts ready.
pub async fn start(
    cluster: Arc<Cluster>,
    pushes: UnboundedReceiver<PushInfo>,
    parts: Parts,
    first_wait: Duration,
) {
    let parts = Arc::new(parts);
    tokio::spawn(dispatch(cluster.clone(), pushes, parts.clone()));
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(health(cluster, parts, ready_tx));
    let _ = tokio::time::timeout(first_wait, ready_rx).await;
}

/// Hands each push from Redis to the broker (channel messages) or the control handler.
async fn dispatch(
    cluster: Arc<Cluster>,
    mut pushes: UnboundedReceiver<PushInfo>,
    parts: Arc<Parts>,
) {
    let control = cluster.channel(&["control"]);
    let channels = cluster.channel(&["ch:"]);
    while let Some(push) = pushes.recv().await {
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                let mut data = push.data.into_iter();
                let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                    (data.next(), data.next())
                else {
                    continue;
                };
                let (Ok(channel), Ok(payload)) =
                    (String::from_utf8(channel), String::from_utf8(payload))
                else {
                    continue;
                };
                if channel == control {
                    control::handle(&cluster, &parts, &payload).await;
                } else if let Some(name) = channel.strip_prefix(&channels) {
                    parts.broker.deliver_local(name, payload.into());
                }
            }
            PushKind::Disconnection => {
                // The health loop turns this into "down" at its next round, or resyncs if
                // Redis answers by then (a failover is over in a moment); say it now.
                cluster.stale.store(true, Ordering::Release);
                metrics::counter!("wsgate_cluster_disconnects_total").increment(1);
                tracing::warn!(target: "wsgate::cluster", "connection to Redis lost; reconnecting");
            }
            _ => {}
        }
    }
}

/// Pings Redis every [`HEALTH_EVERY`]; on the way back up, resynchronises before reporting
/// ready.
async fn health(cluster: Arc<Cluster>, parts: Arc<Parts>, ready: tokio::sync::oneshot::Sender<()>) {
    let mut ready = Some(ready);
    let mut every = tokio::time::interval(HEALTH_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round: u64 = 0;
    metrics::gauge!("wsgate_cluster_up").set(0.0);
    loop {
        every.tick().await;
        round += 1;
        let alive = cluster.ping().await;
        if alive && cluster.is_up() && cluster.stale.swap(false, Ordering::AcqRel) {
            // A connection dropped and came back (a failover, a quick restart): subscriptions
            // may be gone on some shard. Not ready until the resync below has succeeded.
            cluster.up.store(false, Ordering::Release);
            metrics::gauge!("wsgate_cluster_up").set(0.0);
            tracing::warn!(target: "wsgate::cluster", "a Redis connection was lost: resynchronising before reporting ready");
        }
        match (alive, cluster.is_up()) {
            (true, false) => match resync(&cluster, &parts).await {
                Ok(n) => {
                    cluster.stale.store(false, Ordering::Release);
                    cluster.up.store(true, Ordering::Release);
                    metrics::gauge!("wsgate_cluster_up").set(1.0);
                    tracing::info!(target: "wsgate::cluster", node = cluster.node(), redis = %cluster.addr, revocations = n, "Redis reachable: cluster mode ready");
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                }
                Err(e) => {
                    tracing::warn!(target: "wsgate::cluster", error = %e, "Redis answers but resynchronising failed; retrying");
                }
            },
            (false, true) => {
                cluster.up.store(false, Ordering::Release);
                metrics::gauge!("wsgate_cluster_up").set(0.0);
                metrics::counter!("wsgate_cluster_outages_total").increment(1);
                tracing::error!(target: "wsgate::cluster", "Redis unreachable: serving local clients only; tickets, revocations and cross-node delivery answer 503 until it is back");
            }
            (true, true) if round.is_multiple_of(HEARTBEAT_ROUNDS) => {
                if let Err(e) = counts::heartbeat(&cluster).await {
                    tracing::debug!(target: "wsgate::cluster", error = %e, "heartbeat failed");
                }
            }
            _ => {}
        }
    }
}

/// Brings Redis and this node back in line after a (re)connection: subscriptions,
/// revocations both ways, connection counts. Returns how many revocations the node now knows.
async fn resync(cluster: &Cluster, parts: &Parts) -> Result<usize, ClusterError> {
    counts::heartbeat(cluster).await?;
    cluster.subscribe(&cluster.channel(&["control"])).await?;
    parts.broker.resubscribe().await?;
    // Redis may have lost what it held (a restart without persistence), and this node may
    // hold revocations made while it was cut off: take what Redis has, give it (and the
    // other nodes) what it lacks.
    let theirs: HashSet<Revoked> = cluster.load_revocations().await?.into_iter().collect();
    let mine: HashSet<Revoked> = parts.revocations.entries().into_iter().collect();
    let missing: Vec<Revoked> = mine.difference(&theirs).cloned().collect();
    // New to this node: enforced and persisted, so a restart during a later outage keeps them.
    let new: Vec<Revoked> = theirs.difference(&mine).cloned().collect();
    if !crate::revoke::keep_revocations(&parts.revocations, &parts.store, &new).await {
        tracing::error!(target: "wsgate::cluster", "could not persist revocations from Redis; they hold in memory");
    }
    control::share_revocations(cluster, missing).await?;
    counts::resync(cluster, &parts.registry).await?;
    Ok(parts.revocations.len())
}

#[cfg(test)]
mod tests {
    #[test]
    fn slots_match_redis() {
        // `CLUSTER KEYSLOT foo` and `CLUSTER KEYSLOT 123456789` on a real Redis.
        assert_eq!(super::slot_of(b"foo"), 12182);
        assert_eq!(
            super::slot_of(b"123456789"),
            0x31C3,
            "the CRC16/XMODEM check value"
        );
    }
}
