#!/usr/bin/env bash
# Proxy benchmark (issue 11): wsgate's `proxy` endpoint — JWT verified before the upgrade,
# the session enforced for the socket's life — against nginx and haproxy as plain WebSocket
# reverse proxies with no authentication at all, each in front of the same upstream
# (peers/bare_axum: "Welcome!" then echo), driven by the same load tool (wsload).
#
#   ./run-proxy.sh                 ~3 min; prints a table, saves results/proxy-<date>.{md,jsonl}
#   PROXIES="nginx wsgate" IDLE_K=2000 ./run-proxy.sh
#   BEFORE_BIN=/tmp/wsgate-old ./run-proxy.sh   also runs that build, as `wsgate-before`, in
#                                               the same rounds (a before/after in one run)
#
# The proxy runs pinned to core 0 (nginx and haproxy with one worker thread, wsgate's runtime
# on that one core); the upstream and wsload share core 1. Figures are the proxy process's
# own CPU (user+sys, /proc) per operation and its RSS growth per idle proxied connection, so
# they do not depend on which side is the bottleneck. A proxied connection costs the proxy
# two sockets: IDLE_K stays well under the 20,000 open files a process may hold here.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(cd .. && pwd)
WSGATE_BIN=${WSGATE_BIN:-$ROOT/target/release/wsgate}
BEFORE_BIN=${BEFORE_BIN:-}
PROXIES=${PROXIES:-"nginx haproxy ${BEFORE_BIN:+wsgate-before }wsgate"}
IDLE_K=${IDLE_K:-5000}
HS_TOTAL=${HS_TOTAL:-20000}
ECHO_MSGS=${ECHO_MSGS:-2000}
ROUNDS=${ROUNDS:-2}
UP=${UP_PORT:-18230}
PORT=${PORT:-18231}
SECRET=bench-secret-that-is-long-enough-for-hs256

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
if [ ${#missing[@]} -gt 0 ]; then
  as_root apt-get update -q
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
cargo build --release -q -p wsload -p bare_axum
[ -x "$WSGATE_BIN" ] || (cd "$ROOT" && cargo build --release -q -p wsgate-server)
W=$PWD/target/release/wsload
T=$($W mint --secret "$SECRET" --sub alice --exp-secs 86400)
work=$(mktemp -d)
mkdir -p results
out="results/proxy-$(date -u +%Y-%m-%d-%H%M)"
: > "$out.jsonl"
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

taskset -c 1 target/release/bare_axum --port "$UP" >/dev/null 2>&1 &
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$UP) 2>/dev/null && break; sleep 0.05; done

cat > "$work/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile 40000;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.err warn;
events { worker_connections 40000; }
http {
  access_log off;
  client_body_temp_path $work; proxy_temp_path $work; fastcgi_temp_path $work;
  uwsgi_temp_path $work; scgi_temp_path $work;
  server {
    listen 127.0.0.1:$PORT;
    location /ws {
      proxy_pass http://127.0.0.1:$UP;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 3600s;
    }
  }
}
CONF
cat > "$work/haproxy.cfg" <<CONF
global
  maxconn 9000
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 1h
  timeout server 1h
  timeout tunnel 1h
frontend fe
  bind 127.0.0.1:$PORT
  default_backend be
backend be
  server up 127.0.0.1:$UP
CONF
cat > "$work/wsgate.toml" <<CONF
listen = "127.0.0.1:$PORT"
[auth.jwt]
secret = "$SECRET"
[limits]
max_connections_per_user = 0
messages_per_sec = 1000000
[storage]
path = "$work/wsgate.db"
[[endpoints]]
path = "/ws"
kind = "proxy"
upstream = "ws://127.0.0.1:$UP/ws"
CONF

start() { # proxy -> sets PID (the process doing the work)
  case $1 in
    nginx) taskset -c 0 nginx -c "$work/nginx.conf" -p "$work" 2>>"$work/nginx.err" & ;;
    haproxy) taskset -c 0 haproxy -db -f "$work/haproxy.cfg" >/dev/null 2>&1 & ;;
    wsgate) WSGATE_LOG=${WSGATE_LOG:-info} taskset -c 0 "$WSGATE_BIN" serve --config "$work/wsgate.toml" 2>"$work/wsgate.log" & ;;
    wsgate-before) WSGATE_LOG=${WSGATE_LOG:-info} taskset -c 0 "$BEFORE_BIN" serve --config "$work/wsgate.toml" 2>"$work/wsgate.log" & ;;
  esac
  LAUNCHED=$!
  for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.05; done
  kill -0 "$LAUNCHED" 2>/dev/null || { echo "$1 did not start" >&2; exit 1; }
  PID=$LAUNCHED
  if [ "$1" = nginx ]; then PID=$(pgrep -P "$LAUNCHED" | head -1); fi
}
stop() { kill "$LAUNCHED" 2>/dev/null || true; wait "$LAUNCHED" 2>/dev/null || true; sleep 0.3; }
record() { # proxy metric json
  printf '{"proxy":"%s","metric":"%s","result":%s}\n' "$1" "$2" "${3:-null}" >> "$out.jsonl"
}
url="ws://127.0.0.1:$PORT/ws"
for round in $(seq "$ROUNDS"); do
  for p in $PROXIES; do
    echo "== round $round: $p" >&2
    start "$p"
    $W handshake --url "$url" --token "$T" --concurrency 50 --total 500 >/dev/null 2>&1 || true
    record "$p" handshake "$(taskset -c 1 $W handshake --url "$url" --token "$T" --concurrency 50 --total "$HS_TOTAL" --pid "$PID" --json || true)"
    record "$p" echo "$(taskset -c 1 $W echo --url "$url" --token "$T" --connections 100 --messages "$ECHO_MSGS" --size 64 --window 1 --pid "$PID" --json || true)"
    stop
    if [ "$round" = 1 ]; then
      start "$p"
      $W handshake --url "$url" --token "$T" --concurrency 50 --total 200 >/dev/null 2>&1 || true
      record "$p" idle "$(taskset -c 1 $W idle --url "$url" --token "$T" --connections "$IDLE_K" --pid "$PID" --hold-secs 2 --json || true)"
      stop
    fi
  done
done

python3 - "$out.jsonl" "$out.md" "$IDLE_K" <<'PY'
import json, sys
raw, md, idle_k = sys.argv[1], sys.argv[2], sys.argv[3]
rows = [json.loads(l) for l in open(raw) if l.strip()]
def per_op(r, count):
    d = r["result"] or {}
    n, pct = d.get(count), d.get("server_cpu_pct")
    return None if not n or pct is None else pct / 100 * d["elapsed_s"] / n * 1e6
best = {}
for r in rows:
    key = (r["proxy"], r["metric"])
    v = {"handshake": lambda: per_op(r, "ok"), "echo": lambda: per_op(r, "echoed"),
         "idle": lambda: (r["result"] or {}).get("kib_per_conn")}[r["metric"]]()
    if v is not None and (key not in best or v < best[key]):
        best[key] = v
proxies = list(dict.fromkeys(r["proxy"] for r in rows))
def cell(p, m, d):
    v, ref = best.get((p, m)), best.get(("nginx", m))
    if v is None: return "–"
    return f"{v:.{d}f}" + (f" ({v / ref:.2f}×)" if ref and p != "nginx" else "")
lines = ["| proxy | CPU µs / proxied handshake | CPU µs / echoed 64 B message | RSS KiB / idle proxied connection |",
         "|---|---|---|---|"]
for p in proxies:
    lines.append(f"| {p} | {cell(p, 'handshake', 1)} | {cell(p, 'echo', 2)} | {cell(p, 'idle', 1)} |")
lines.append("")
lines.append(f"Best of the rounds per cell; the proxy's own CPU (core 0) per op; idle over {idle_k} connections. "
             "nginx/haproxy authenticate nothing; wsgate verifies an HS256 JWT and enforces the session.")
open(md, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
echo "saved $out.md and $out.jsonl" >&2
