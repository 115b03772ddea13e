#!/usr/bin/env bash
# Connection churn, cluster mode against single-node mode (issue 14): one wsgate node with
# `max_connections_per_user` on (so every connect and disconnect updates the per-user count:
# in memory alone, or also in Redis through the counts script), the load tool running
# connect + welcome + close as fast as it can (`wsload handshake`, C in flight). Node pinned
# to core 0; tool and Redis on core 1. Rounds interleave the two modes; each run prints the
# churn rate (handshakes = connects + disconnects per second) and the node's CPU per
# handshake; the ratio is cluster / single of the best run of each.
#
#   bench/scale/run-churn.sh            # ~2 min after the builds; ROUNDS=3 TOTAL=20000 C=50
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
TOTAL=${TOTAL:-20000}
C=${C:-50}
PORT=${PORT:-18520}
REDIS_PORT=${REDIS_PORT:-18591}
SECRET=churn-secret-0123456789abcdef-0123456789abcdef

. bench/scale/common.sh
scale_build
start_redis "$REDIS_PORT" taskset -c 1

config() { # mode -> config file
  cat <<TOML
listen = "127.0.0.1:$PORT"
[auth]
sources = ["bearer"]
[auth.jwt]
secret_env = "JWT_SECRET"
[storage]
path = "$DIR/$1.db"
[limits]
max_connections_per_user = 100000
auth_failures_per_min = 0
[[endpoints]]
path = "/echo"
kind = "echo"
TOML
  if [ "$1" = cluster ]; then
    printf '[cluster]\nredis_url = "redis://127.0.0.1:%s"\nkey_prefix = "churn:"\n' "$REDIS_PORT"
  fi
}

TOKEN=$("$WSLOAD" mint --secret "$SECRET" --sub churn --exp-secs 7200)
echo "| round | mode | handshakes/s | node CPU µs/handshake | failures |"
echo "|---|---|---|---|---|"
for round in $(seq "$ROUNDS"); do
  for mode in single cluster; do
    config "$mode" >"$DIR/$mode.toml"
    JWT_SECRET=$SECRET WSGATE_LOG=warn taskset -c 0 "$WSGATE" serve --config "$DIR/$mode.toml" >"$DIR/$mode.log" 2>&1 &
    node=$!
    wait_ready "$PORT"
    taskset -c 1 "$WSLOAD" handshake --url "ws://127.0.0.1:$PORT/echo" --token "$TOKEN" --pid "$node" \
      --concurrency "$C" --total "$TOTAL" --duration-max 60 --src-ips 60 --json >"$DIR/run.json" || true
    if [ "$mode" = cluster ]; then
      # Every release reached Redis: the subject's count is back to 0 on this node.
      left=$(redis-cli -p "$REDIS_PORT" hget "churn:conns:churn" "$(redis-cli -p "$REDIS_PORT" --scan --pattern 'churn:node:*' | head -1 | sed 's/^churn:node://')")
      [ -z "$left" ] || [ "$left" = 0 ] || echo "warning: $left slots still counted in Redis" >&2
    fi
    kill "$node"; wait "$node" 2>/dev/null || true
    python3 - "$round" "$mode" "$DIR/run.json" <<'PY'
import json, sys
r = json.loads(open(sys.argv[3]).read().strip().splitlines()[-1])
ops, pct = r.get("ops_per_s") or 0, r.get("server_cpu_pct")
us = f"{pct / 100 * 1e6 / ops:.1f}" if ops and pct is not None else "?"
print(f"| {sys.argv[1]} | {sys.argv[2]} | {ops:.0f} | {us} | {r.get('failures')} |")
PY
    sleep 1
  done
done
