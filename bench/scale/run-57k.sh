#!/usr/bin/env bash
# Scale baseline (issue 14): three wsgate nodes in cluster mode on one private Redis hold
# PER_NODE idle authenticated connections each (19,000 × 3 = 57,000 by default; a process
# here may hold at most 20,000 files, so each node and each load process stays under it).
# While they are held it measures what a user would watch:
#   - every connection opened and none dropped (wsload idle, one per node, own core share),
#   - server RSS per connection (KiB) and connections opened per second per node,
#   - /readyz of every node polled every 250 ms throughout (any non-200 is counted),
#   - a cross-node admin disconnect: a probe socket on node 0, POST /api/disconnect on
#     node 1, time to its 4003 close (PROBES times, p50/p99),
#   - idle CPU: each node's user+sys CPU over a WINDOW_S window while only idle sockets (and
#     their pings: idle_timeout_secs = IDLE_S, a ping every IDLE_S/2) are open, in µs per
#     connection per second.
# Not part of the test suite (too heavy for CI); its figures are in BENCHMARKS.md.
#
#   bench/scale/run-57k.sh                 # ~2-3 min after the builds
#   PER_NODE=5000 HOLD_S=40 bench/scale/run-57k.sh   # a lighter run
set -euo pipefail
cd "$(dirname "$0")/../.."
PER_NODE=${PER_NODE:-19000}
WINDOW_S=${WINDOW_S:-30}
IDLE_S=${IDLE_S:-60}
PROBES=${PROBES:-20}
BASE_PORT=${BASE_PORT:-18500}
REDIS_PORT=${REDIS_PORT:-18590}
HOLD_S=${HOLD_S:-$((WINDOW_S + 30))}
SECRET=scale-secret-0123456789abcdef-0123456789abcdef
ADMIN=scale-admin-key-0123456789

python3 -c 'import websockets' 2>/dev/null || python3 -m pip install -q websockets
. bench/scale/common.sh
scale_build
start_redis "$REDIS_PORT"

NODE_PIDS=()
for i in 0 1 2; do
  cat >"$DIR/node$i.toml" <<TOML
listen = "127.0.0.1:$((BASE_PORT + i))"
[auth]
sources = ["bearer"]
[auth.jwt]
secret_env = "JWT_SECRET"
[storage]
path = "$DIR/node$i.db"
[limits]
max_connections_per_user = 0
auth_failures_per_min = 0
idle_timeout_secs = $IDLE_S
[cluster]
redis_url = "redis://127.0.0.1:$REDIS_PORT"
key_prefix = "scale:"
[[endpoints]]
path = "/echo"
kind = "echo"
TOML
  (ulimit -n 20000; JWT_SECRET=$SECRET WSGATE_ADMIN_KEY=$ADMIN WSGATE_LOG=warn \
    exec "$WSGATE" serve --config "$DIR/node$i.toml" >"$DIR/node$i.log" 2>&1) &
  PIDS+=($!)
  NODE_PIDS+=($!)
done
for i in 0 1 2; do wait_ready $((BASE_PORT + i)); done
echo "== nodes ready: ${NODE_PIDS[*]}" >&2

TOKEN=$("$WSLOAD" mint --secret "$SECRET" --sub load --exp-secs 7200)
PROBE_TOKEN=$("$WSLOAD" mint --secret "$SECRET" --sub probe --exp-secs 7200)

# Readiness of every node, every 250 ms, until $DIR/stop exists.
python3 - "$DIR" "$BASE_PORT" >"$DIR/ready.json" <<'PY' &
import json, os, sys, time, urllib.request
d, base = sys.argv[1], int(sys.argv[2])
polls, bad = 0, {0: 0, 1: 0, 2: 0}
while not os.path.exists(f"{d}/stop"):
    for i in range(3):
        try:
            ok = urllib.request.urlopen(f"http://127.0.0.1:{base+i}/readyz", timeout=2).status == 200
        except Exception:
            ok = False
        bad[i] += not ok
    polls += 1
    time.sleep(0.25)
print(json.dumps({"polls": polls, "not_ready": bad}))
PY
PIDS+=($!)

echo "== opening $PER_NODE connections on each node" >&2
LOAD_PIDS=()
for i in 0 1 2; do
  (ulimit -n 20000; exec "$WSLOAD" idle --url "ws://127.0.0.1:$((BASE_PORT + i))/echo" --token "$TOKEN" \
    --pid "${NODE_PIDS[$i]}" --connections "$PER_NODE" --open-concurrency 200 --src-ips 60 \
    --hold-secs "$HOLD_S" --settle-secs 5 --duration-max 120 --json >"$DIR/idle$i.json" 2>"$DIR/idle$i.err") &
  LOAD_PIDS+=($!)
done

open_count() { # node -> wsgate_connections_open
  curl -s "http://127.0.0.1:$((BASE_PORT + $1))/metrics" | awk '/^wsgate_connections_open /{print int($2)}'
}
t0=$SECONDS
until [ "$(open_count 0)" -ge "$PER_NODE" ] && [ "$(open_count 1)" -ge "$PER_NODE" ] && [ "$(open_count 2)" -ge "$PER_NODE" ]; do
  [ $((SECONDS - t0)) -lt 150 ] || { echo "not all connections opened in 150 s" >&2; break; }
  sleep 0.5
done
echo "== all open after $((SECONDS - t0)) s; measuring idle CPU over ${WINDOW_S} s and $PROBES cross-node disconnects" >&2
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -a C0
for i in 0 1 2; do C0[$i]=$(cpu_ticks "${NODE_PIDS[$i]}"); done
w0=$(date +%s.%N)
sleep "$WINDOW_S"
w1=$(date +%s.%N)
declare -a C1
for i in 0 1 2; do C1[$i]=$(cpu_ticks "${NODE_PIDS[$i]}"); done

# Cross-node disconnect, after the idle window so it does not count in it.
python3 - "$BASE_PORT" "$PROBE_TOKEN" "$ADMIN" "$PROBES" >"$DIR/probe.json" <<'PY'
import asyncio, json, sys, time, urllib.request
import websockets
base, token, admin, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
async def once():
    async with websockets.connect(f"ws://127.0.0.1:{base}/echo",
                                  additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        await ws.recv()  # welcome
        req = urllib.request.Request(f"http://127.0.0.1:{base+1}/api/disconnect",
            data=json.dumps({"sub": "probe"}).encode(), method="POST",
            headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"})
        t = time.perf_counter()
        await asyncio.to_thread(urllib.request.urlopen, req, timeout=5)
        try:
            await asyncio.wait_for(ws.recv(), 5)
        except websockets.ConnectionClosed as e:
            assert e.rcvd.code == 4003, e.rcvd
            return (time.perf_counter() - t) * 1000
        raise SystemExit("no close")
async def main():
    ms = sorted([await once() for _ in range(n)])
    q = lambda p: ms[round((len(ms) - 1) * p)]
    print(json.dumps({"n": n, "p50_ms": round(q(.5), 2), "p99_ms": round(q(.99), 2), "max_ms": round(ms[-1], 2)}))
asyncio.run(main())
PY

for p in "${LOAD_PIDS[@]}"; do wait "$p" || true; done
touch "$DIR/stop"
sleep 0.5

HZ=$(getconf CLK_TCK)
python3 - "$DIR" "$PER_NODE" "$HZ" "$w0" "$w1" "${C0[@]}" "${C1[@]}" <<'PY'
import json, sys
d, per, hz, w0, w1 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
c0, c1 = list(map(int, sys.argv[6:9])), list(map(int, sys.argv[9:12]))
dt = w1 - w0
rows = [json.loads(open(f"{d}/idle{i}.json").read().strip().splitlines()[-1]) for i in range(3)]
ready = json.loads(open(f"{d}/ready.json").read() or "{}")
probe = json.loads(open(f"{d}/probe.json").read())
print("| node | opened | dropped while held | opens/s | server KiB/conn | idle CPU µs/conn/s |")
print("|---|---|---|---|---|---|")
tot_open = tot_drop = 0
for i, r in enumerate(rows):
    cpu_us = (c1[i] - c0[i]) / hz * 1e6
    idle = cpu_us / (r["opened"] * dt) if r["opened"] else float("nan")
    tot_open += r["opened"]; tot_drop += r["dropped_while_held"]
    print(f"| {i} | {r['opened']} | {r['dropped_while_held']} | {r['opens_per_s']:.0f} | {r['kib_per_conn']} | {idle:.2f} |")
print(f"\ntotal open at once: {tot_open} (dropped {tot_drop}); /readyz polls: {ready.get('polls')}, not ready: {ready.get('not_ready')}")
print(f"cross-node admin disconnect (socket on node 0, POST on node 1): n={probe['n']} p50 {probe['p50_ms']} ms, p99 {probe['p99_ms']} ms, max {probe['max_ms']} ms")
print(f"idle CPU window {dt:.1f} s (pings every idle_timeout_secs / 2)")
PY
