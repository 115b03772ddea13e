#!/usr/bin/env bash
# What telling operators costs (issue 23): the same wsgate, the same `echo` endpoint and the
# same load, in one run, with
#   off        no [events], no [telemetry]
#   events     [events] to a local webhook receiver (answers 204)
#   telemetry  [telemetry] to a local OTLP/HTTP collector (answers 200)
#   down       [events] to a webhook nobody listens on (every delivery fails and is retried)
# Figures: wsgate's own CPU per handshake (µs, core 0; the receivers and wsload share core 1),
# its RSS per idle socket (events on vs off), and RSS while HUGE connects (default 100,000)
# meet the dead webhook: its queue must stop at `buffer_max` (here 20,000 events: the
# default's 100,000 would take longer to fill than this run lasts).
#
#   bench/run-observe.sh          ~4 min; prints the table, saves results/observe-<date>.{md,jsonl}
#   ROUNDS=1 HS_TOTAL=5000 HUGE=20000 IDLE_K=2000 bench/run-observe.sh    a quick look
#   VARIANTS="off events" PARTS=handshake ROUNDS=15 bench/run-observe.sh   a sharper ratio
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(cd .. && pwd)
WSGATE_BIN=${WSGATE_BIN:-$ROOT/target/release/wsgate}
ROUNDS=${ROUNDS:-3}
HS_TOTAL=${HS_TOTAL:-20000}
IDLE_K=${IDLE_K:-5000}
HUGE=${HUGE:-100000}
BUFFER=${BUFFER:-20000}
VARIANTS=${VARIANTS:-"off events telemetry down"}
PARTS=${PARTS:-"handshake idle huge"}
has() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
PORT=${PORT:-18330}
SINK=${SINK_PORT:-18331}
DEAD=${DEAD_PORT:-18339}
SECRET=bench-secret-that-is-long-enough-for-hs256
export WEBHOOK_SECRET="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwYWJjZGVmZ2hpams="

cargo build --release -q -p wsload
[ -x "$WSGATE_BIN" ] || (cd "$ROOT" && cargo build --release -q -p wsgate-server --bin wsgate)
W=$PWD/target/release/wsload
T=$($W mint --secret "$SECRET" --sub alice --exp-secs 86400)
work=$(mktemp -d)
mkdir -p results
out="results/observe-$(date -u +%Y-%m-%d-%H%M)"
: > "$out.jsonl"
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

# One sink for both: it reads each body and answers 204 (webhook) or 200 (OTLP, empty body).
cat > "$work/sink.py" <<'PY'
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200 if self.path == "/v1/traces" else 204)
        self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
taskset -c 1 python3 "$work/sink.py" "$SINK" &
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$SINK) 2>/dev/null && break; sleep 0.05; done

config() { # variant
  cat <<CONF
listen = "127.0.0.1:$PORT"
[auth.jwt]
secret = "$SECRET"
[limits]
max_connections_per_user = 0
auth_failures_per_min = 0
[storage]
path = "$work/wsgate-$1.db"
[[endpoints]]
path = "/ws"
kind = "echo"
CONF
  case $1 in
    events) printf '[events]\nwebhook_url = "http://127.0.0.1:%s/events"\nwebhook_secret_env = "WEBHOOK_SECRET"\n' "$SINK" ;;
    down) printf '[events]\nwebhook_url = "http://127.0.0.1:%s/events"\nwebhook_secret_env = "WEBHOOK_SECRET"\nbuffer_max = %s\n' "$DEAD" "$BUFFER" ;;
    telemetry) printf '[telemetry]\notlp_endpoint = "http://127.0.0.1:%s"\n' "$SINK" ;;
  esac
}

start() { # variant -> PID
  config "$1" > "$work/$1.toml"
  WSGATE_LOG=warn taskset -c 0 "$WSGATE_BIN" serve --config "$work/$1.toml" 2>"$work/$1.log" &
  PID=$!
  for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.05; done
  kill -0 "$PID" 2>/dev/null || { echo "wsgate ($1) did not start: $(cat "$work/$1.log")" >&2; exit 1; }
}
stop() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; sleep 0.3; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
record() { printf '{"variant":"%s","metric":"%s","result":%s}\n' "$1" "$2" "${3:-null}" >> "$out.jsonl"; }
url="ws://127.0.0.1:$PORT/ws"

for round in $(seq "$ROUNDS"); do
  has handshake || break
  for v in $VARIANTS; do
    echo "== round $round: $v" >&2
    start "$v"
    $W handshake --url "$url" --token "$T" --concurrency 50 --total 500 >/dev/null 2>&1 || true
    record "$v" handshake "$(taskset -c 1 $W handshake --url "$url" --token "$T" --concurrency 50 --total "$HS_TOTAL" --pid "$PID" --json || true)"
    stop
  done
done
for v in off events; do
  has idle || break
  echo "== idle: $v" >&2
  start "$v"
  $W handshake --url "$url" --token "$T" --concurrency 50 --total 200 >/dev/null 2>&1 || true
  record "$v" idle "$(taskset -c 1 $W idle --url "$url" --token "$T" --connections "$IDLE_K" --pid "$PID" --hold-secs 2 --json || true)"
  stop
done
# HUGE connects with events off, then twice with the webhook down: the same latency, and
# memory that stops growing once the queue holds buffer_max events.
for v in off down; do
  has huge || break
  echo "== $HUGE connects: $v" >&2
  start "$v"
  before=$(rss_kib "$PID")
  passes="1 2"; [ "$v" = off ] && passes=1
  for pass in $passes; do
    taskset -c 1 $W handshake --url "$url" --token "$T" --concurrency 50 --total "$HUGE" --pid "$PID" --json > "$work/huge.json" || true
    dropped=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^wsgate_events_dropped_total/ {n += $2} END {print n + 0}')
    record "$v" "huge$pass" "{\"rss_before_kib\":$before,\"rss_after_kib\":$(rss_kib "$PID"),\"dropped\":$dropped,\"load\":$(cat "$work/huge.json")}"
  done
  stop
done

python3 - "$out.jsonl" "$out.md" "$IDLE_K" "$HUGE" "$BUFFER" <<'PY'
import json, statistics, sys
raw, md, idle_k, huge, buffer = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
rows = [json.loads(l) for l in open(raw) if l.strip()]
def per_op(d):
    n, pct = d.get("ok"), d.get("server_cpu_pct")
    return None if not n or pct is None else pct / 100 * d["elapsed_s"] / n * 1e6
hs = {}
for r in rows:
    if r["metric"] == "handshake" and r["result"]:
        v = per_op(r["result"])
        if v is not None:
            hs.setdefault(r["variant"], []).append(v)
med = {k: statistics.median(v) for k, v in hs.items()}
idle = {r["variant"]: (r["result"] or {}).get("kib_per_conn") for r in rows if r["metric"] == "idle"}
lines = ["| variant | CPU µs / handshake (median of rounds) | vs off | all rounds | p99 ms (median) | KiB / idle socket |",
         "|---|---|---|---|---|---|"]
for v in ["off", "events", "telemetry", "down"]:
    if v not in med: continue
    ratio = f"{med[v] / med['off']:.2f}×" if "off" in med else "–"
    i = idle.get(v)
    p99 = statistics.median(r["result"]["p99_ms"] for r in rows if r["variant"] == v and r["metric"] == "handshake" and r["result"])
    lines.append(f"| {v} | {med[v]:.1f} | {ratio} | {', '.join(f'{x:.1f}' for x in hs[v])} | {p99:.1f} | {'–' if i is None else f'{i:.2f}'} |")
lines.append("")
for r in rows:
    if r["metric"].startswith("huge"):
        d = r["result"]; load = d["load"]
        what = "events off" if r["variant"] == "off" else f"webhook down (buffer_max {buffer})"
        lines.append(f"- {what}, {int(r['metric'][4:]) * huge} connects: RSS {d['rss_before_kib'] / 1024:.1f} → {d['rss_after_kib'] / 1024:.1f} MiB, "
                     f"events dropped {d['dropped']:.0f}, handshakes ok {load.get('ok')}, "
                     f"CPU µs / handshake {per_op(load) or 0:.1f}, latency p50 {load.get('p50_ms')} / p99 {load.get('p99_ms')} ms")
lines.append("")
lines.append(f"wsgate pinned to core 0; wsload and the receivers on core 1. Idle over {idle_k} sockets.")
open(md, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
echo "saved $out.md and $out.jsonl" >&2
