#!/usr/bin/env bash
# Revocation to close, cluster-wide: 3 wsgate nodes on one Redis, 30,000 authenticated
# sockets spread over them (two load processes: the per-process file limit is 20,000), a
# Shared Signals transmitter's SETs pushed to node 1 — one CAEP session-revoked per single
# session (200, one at a time), then one RISC account-disabled for a subject holding 1,000
# sockets over the three nodes — and the time from each push to each close frame
# (crates/wsgate-server/examples/revocation_latency.rs).
#
#   bench/revocation.sh            # N=30000 by default: N=9000 bench/revocation.sh for less
#
# Needs redis-server and python3 (serves the transmitter's JWKS, the test fixture's).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/scale/common.sh
N=${N:-30000}
HALF=$((N / 2))
cargo build --release -q -p wsgate-server --bin wsgate --example revocation_latency
WSGATE=$PWD/target/release/wsgate
TOOL=$PWD/target/release/examples/revocation_latency
ulimit -n 20000

start_redis 18700
python3 -m http.server 18709 --bind 127.0.0.1 --directory crates/wsgate-server/tests/fixtures \
  >"$DIR/jwks.log" 2>&1 &
PIDS+=($!)
URLS=()
for i in 1 2 3; do
  port=$((18700 + i))
  cat >"$DIR/node$i.toml" <<TOML
listen = "127.0.0.1:$port"
[auth]
sources = ["bearer"]
[auth.jwt]
secret_env = "JWT_SECRET"
[storage]
path = "$DIR/node$i.db"
[limits]
max_connections_per_user = 0
auth_failures_per_min = 0
idle_timeout_secs = 0
[cluster]
redis_url = "redis://127.0.0.1:18700"
[ssf]
issuer = "https://idp.bench"
jwks_url = "http://127.0.0.1:18709/jwks.json"
audience = "https://wsgate.bench"
[[endpoints]]
path = "/ws"
kind = "echo"
TOML
  JWT_SECRET=s WSGATE_LOG=warn "$WSGATE" serve --config "$DIR/node$i.toml" 2>"$DIR/node$i.log" &
  PIDS+=($!)
  URLS+=("ws://127.0.0.1:$port/ws")
done
for i in 1 2 3; do wait_ready $((18700 + i)); done
ALL=$(IFS=,; echo "${URLS[*]}")

"$TOOL" --urls "$ALL" --secret s --connections "$HALF" --prefix hold --hold >"$DIR/hold.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 600); do grep -q holding "$DIR/hold.log" && break; sleep 0.2; done
"$TOOL" --urls "$ALL" --secret s --connections "$HALF" --group 1000 \
  --push http://127.0.0.1:18701/api/ssf/events --key crates/wsgate-server/tests/fixtures/rsa_private.pem \
  --kid rsa-1 --issuer https://idp.bench --audience https://wsgate.bench
for i in 1 2 3; do
  curl -s "http://127.0.0.1:$((18700 + i))/metrics" |
    awk -v n="$i" '/^wsgate_revocation_to_close_seconds_(count|sum)\{cause="ssf"\}/ {print "node " n ": " $0}'
done
