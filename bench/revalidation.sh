#!/usr/bin/env bash
# What continuous authorization costs: N sockets (default 10,000) whose credentials an auth
# backend re-checks every PERIOD seconds (`auth.proxy_revalidate_secs`), K distinct tokens
# (default 1,000: ten sockets each). Measures the wsgate process's CPU over ROUNDS periods with
# re-checks on, and the same sockets idle with them off, in one run; prints the CPU added per
# socket per period and the backend calls per period (one per distinct token).
#
#   bench/revalidation.sh          # N=10000 K=1000 PERIOD=10 ROUNDS=3
#
# The backend is python3's http.server answering 200 {"sub": …} (a stand-in for an IdP).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/scale/common.sh
N=${N:-10000}
K=${K:-1000}
PERIOD=${PERIOD:-10}
ROUNDS=${ROUNDS:-3}
cargo build --release -q -p wsgate-server --bin wsgate --example revocation_latency
WSGATE=$PWD/target/release/wsgate
TOOL=$PWD/target/release/examples/revocation_latency
ulimit -n 20000

cat >"$DIR/backend.py" <<'PY'
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        out = json.dumps({"sub": "u-" + body["token"][-12:]}).encode()
        self.send_response(200); self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out))); self.end_headers(); self.wfile.write(out)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
python3 "$DIR/backend.py" 18759 &
PIDS+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/18759) 2>/dev/null && break; sleep 0.1; done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run() { # $1: proxy_revalidate_secs; prints "ticks calls"
  local port=18760
  cat >"$DIR/wsgate.toml" <<TOML
listen = "127.0.0.1:$port"
[auth]
sources = ["bearer"]
proxy_url = "http://127.0.0.1:18759/auth"
proxy_revalidate_secs = $1
[storage]
path = "$DIR/wsgate-$1.db"
[limits]
max_connections_per_user = 0
auth_failures_per_min = 0
idle_timeout_secs = 0
[[endpoints]]
path = "/ws"
kind = "echo"
TOML
  WSGATE_LOG=warn "$WSGATE" serve --config "$DIR/wsgate.toml" 2>"$DIR/server-$1.log" &
  local spid=$!
  wait_ready $port
  "$TOOL" --urls "ws://127.0.0.1:$port/ws" --secret s --connections "$N" --distinct "$K" --hold >"$DIR/hold.log" 2>&1 &
  local tpid=$!
  for _ in $(seq 600); do grep -q holding "$DIR/hold.log" && break; sleep 0.2; done
  sleep "$PERIOD" # past the first round's jitter window
  local calls0 ticks0
  calls0=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^wsgate_revalidations_total/ {n += $2} END {print n + 0}')
  ticks0=$(cpu_ticks $spid)
  sleep $((PERIOD * ROUNDS))
  local ticks1 calls1
  ticks1=$(cpu_ticks $spid)
  calls1=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^wsgate_revalidations_total/ {n += $2} END {print n + 0}')
  kill $tpid $spid; wait $tpid $spid 2>/dev/null || true
  echo "$((ticks1 - ticks0)) $((calls1 - calls0))"
}

read -r on calls < <(run "$PERIOD")
read -r off _ < <(run 0)
HZ=$(getconf CLK_TCK)
awk -v on="$on" -v off="$off" -v calls="$calls" -v n="$N" -v k="$K" -v r="$ROUNDS" -v p="$PERIOD" -v hz="$HZ" 'BEGIN {
  printf "| sockets | distinct tokens | period | CPU on (s) | CPU off (s) | added CPU per socket per period | backend calls per period |\n|---|---|---|---|---|---|---|\n"
  printf "| %d | %d | %d s | %.2f | %.2f | %.1f µs | %.0f |\n", n, k, p, on / hz, off / hz, (on - off) / hz / (n * r) * 1e6, calls / r
}'
