#!/usr/bin/env bash
# Fan-out against the machine's floor (issue 14): one publish to N subscribers of one
# channel, time from the POST to the last subscriber's receipt, measured by the same tool
# (`examples/fanout.rs`, core 1) against wsgate's pubsub endpoint and against
# `examples/fanout_floor.rs` (one write per socket of a frame encoded once: what the
# kernel costs), each server on core 0, rounds interleaved. Prints each run's p50/p99 and
# the ratio wsgate / floor of the medians.
#
#   bench/scale/run-fanout.sh        # ROUNDS=3 N=10000 PUBLISHES=20
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
N=${N:-10000}
PUBLISHES=${PUBLISHES:-20}
PORT=${PORT:-18530}
SECRET=fanout-secret-0123456789abcdef-0123456789abcdef
ADMIN=fanout-admin-key-0123456789

. bench/scale/common.sh
scale_build --example fanout --example fanout_floor
cat >"$DIR/wsgate.toml" <<TOML
listen = "127.0.0.1:$PORT"
[auth]
sources = ["bearer"]
[auth.jwt]
secret_env = "JWT_SECRET"
[storage]
path = "$DIR/wsgate.db"
[limits]
max_connections_per_user = 0
auth_failures_per_min = 0
messages_per_sec = 0
idle_timeout_secs = 0
[[endpoints]]
path = "/ws"
kind = "pubsub"
TOML

wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return; sleep 0.1; done; }
ulimit -n 20000
echo "| round | server | p50 ms | p99 ms | deliveries/s |"
echo "|---|---|---|---|---|"
for round in $(seq "$ROUNDS"); do
  for server in wsgate floor; do
    if [ "$server" = wsgate ]; then
      JWT_SECRET=$SECRET WSGATE_ADMIN_KEY=$ADMIN WSGATE_LOG=warn taskset -c 0 "$WSGATE" serve --config "$DIR/wsgate.toml" >"$DIR/server.log" 2>&1 &
    else
      taskset -c 0 target/release/examples/fanout_floor --port "$PORT" >"$DIR/server.log" 2>&1 &
    fi
    SPID=$!
    PIDS+=("$SPID")
    wait_port
    taskset -c 1 target/release/examples/fanout --url "ws://127.0.0.1:$PORT/ws" --secret "$SECRET" \
      --admin-key "$ADMIN" --connections "$N" --publishes "$PUBLISHES" >"$DIR/out.txt"
    kill "$SPID"; wait "$SPID" 2>/dev/null || true
    python3 - "$round" "$server" "$DIR/out.txt" >>"$DIR/rows.txt" <<'PY'
import re, sys
t = open(sys.argv[3]).read()
p50, p99 = re.search(r"p50 ([\d.]+) ms, p99 ([\d.]+) ms", t).groups()
rate = re.search(r"median publish\): (\d+)", t).group(1)
print(f"| {sys.argv[1]} | {sys.argv[2]} | {p50} | {p99} | {rate} |")
PY
    tail -1 "$DIR/rows.txt"
    sleep 1
  done
done
python3 - "$DIR/rows.txt" <<'PY'
import statistics, sys
rows = [l.strip("| \n").split(" | ") for l in open(sys.argv[1])]
med = lambda s, i: statistics.median(float(r[i]) for r in rows if r[1] == s)
for i, name in ((2, "p50"), (3, "p99")):
    print(f"\nwsgate / floor, median of rounds, {name}: {med('wsgate', i) / med('floor', i):.2f}x "
          f"({med('wsgate', i):.1f} / {med('floor', i):.1f} ms)", end="")
print()
PY
