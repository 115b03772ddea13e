#!/usr/bin/env bash
# Instructions per operation, counted by callgrind, for one or more wsgate builds side by side:
# a handshake (connect, JWT, welcome, close), a refused handshake (bad signature) and an echoed
# message on the echo endpoint. CPU time on a shared machine moves ±10–17% between rounds;
# instruction counts do not (the same binary and inputs give the same count whatever the
# neighbours do), so this is the A/B for changes on the hot paths.
#
# Each figure is the difference of two runs of different lengths divided by the difference
# of their operation counts, so start-up and shutdown cancel out. One operation at a time, so
# every one takes the same path (with several in flight, how many share a wake-up varies), on
# one runtime worker (with two, which one runs a task varies).
#
#   bench/callgrind.sh target/release/wsgate                      # one build
#   bench/callgrind.sh /tmp/old/wsgate target/release/wsgate      # before | after
#   PROVIDERS=5 bench/callgrind.sh target/release/wsgate          # [auth.jwt] + 4 more identity
#                                                                 # providers (tokens routed by iss)
#   ROWS=handshake bench/callgrind.sh …                           # only the handshake row
#   EXTRA_TOML=$'[events]\nwebhook_url = …' bench/callgrind.sh …  # config appended (events,
#                                                                 # telemetry on vs off)
#   PROXY=1 bench/callgrind.sh …                                  # through a `proxy` endpoint
#                                                                 # in front of peers/bare_axum
#                                                                 # (its own instructions apart)
#   WSGATE_LOG=info bench/callgrind.sh …                          # with the default log level
#                                                                 # (warn otherwise: no line per
#                                                                 # connection is counted)
#
# Needs valgrind (Debian: valgrind) and the load tool (built here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n 2,25p "$0"; exit 2; }
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }
(cd bench && cargo build --release -q -p wsload)
WSLOAD=$PWD/bench/target/release/wsload
PORT=${PORT:-18640}
SECRET=callgrind-secret-0123456789abcdef-0123456789abcdef
DIR=$(mktemp -d)
SPID=
UPID=
cleanup() {
  [ -z "$SPID" ] || kill "$SPID" 2>/dev/null || true
  [ -z "$UPID" ] || kill "$UPID" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

cat >"$DIR/wsgate.toml" <<TOML
listen = "127.0.0.1:$PORT"
[auth]
sources = ["bearer"]
[auth.jwt]
algorithms = ["HS256"]
secret_env = "JWT_SECRET"
[storage]
path = "$DIR/wsgate.db"
[limits]
max_message_bytes = 65536
max_connections_per_user = 0
messages_per_sec = 0
auth_failures_per_min = 0
[[endpoints]]
path = "/echo"
kind = "echo"
TOML
# Identity providers beside [auth.jwt]: with more than one, every token is routed by its `iss`
# (the test tokens carry none, so they go to [auth.jwt], the provider without an issuer).
for i in $(seq 2 "${PROVIDERS:-1}"); do
  cat >>"$DIR/wsgate.toml" <<TOML
[[auth.providers]]
name = "p$i"
issuer = "https://p$i.example"
algorithms = ["HS256"]
secret = "provider-$i-secret-0123456789abcdef-0123456789"
TOML
done
printf '%s\n' "${EXTRA_TOML:-}" >>"$DIR/wsgate.toml"
URL=ws://127.0.0.1:$PORT/echo
if [ -n "${PROXY:-}" ]; then
  # The upstream runs outside valgrind: only wsgate's instructions are counted.
  (cd bench && cargo build --release -q -p bare_axum)
  bench/target/release/bare_axum --port $((PORT + 1)) >/dev/null 2>&1 &
  UPID=$!
  printf '[[endpoints]]\npath = "/proxy"\nkind = "proxy"\nupstream = "ws://127.0.0.1:%s/ws"\n' \
    $((PORT + 1)) >>"$DIR/wsgate.toml"
  URL=ws://127.0.0.1:$PORT/proxy
fi

TOKEN=$("$WSLOAD" mint --secret "$SECRET" --sub alice --exp-secs 3600)
BAD=$("$WSLOAD" mint --secret wrong-secret-0123456789abcdef-0123456789 --sub alice --exp-secs 3600)

# The server's total instructions for one load run: callgrind <binary> <load command...>
count() {
  local bin=$1
  shift
  rm -f "$DIR/cg.out"
  TOKIO_WORKER_THREADS=1 JWT_SECRET=$SECRET WSGATE_LOG=${WSGATE_LOG:-warn} valgrind --tool=callgrind --callgrind-out-file="$DIR/cg.out" \
    "$bin" serve --config "$DIR/wsgate.toml" >"$DIR/server.log" 2>&1 &
  SPID=$!
  for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
  "$@" >/dev/null
  kill -TERM "$SPID"
  wait "$SPID" 2>/dev/null || true
  SPID=
  grep -E '^(summary|totals):' "$DIR/cg.out" | head -1 | awk '{print $2}'
}

per_op() { # <binary> <small count> <large count> <load command, @N@ for the count>
  local bin=$1 small=$2 large=$3
  shift 3
  local a b
  a=$(count "$bin" "${@//@N@/$small}")
  b=$(count "$bin" "${@//@N@/$large}")
  echo $(((b - a) / (large - small)))
}

printf '| operation |'; for b in "$@"; do printf ' %s |' "$b"; done; echo
printf '|---|'; for _ in "$@"; do printf -- '---|'; done; echo
row() { # <label> <small> <large> <divisor> <load command, @N@ for the count>
  local label=$1 small=$2 large=$3 div=$4
  shift 4
  printf '| %s |' "$label"
  for b in "${BINS[@]}"; do printf ' %s |' "$(per_op "$b" "$small" "$large" "$@" | awk -v d="$div" '{printf "%d", $1 / d}')"; done
  echo
}
BINS=("$@")
row "handshake (connect, JWT, welcome, close)" 500 4500 1 \
  "$WSLOAD" handshake --url "$URL" --token "$TOKEN" --concurrency 1 --total @N@
[ "${ROWS:-all}" = handshake ] && exit 0
row "refused handshake (bad signature, 401 body)" 500 4500 1 \
  "$WSLOAD" reject --url "$URL" --token "$BAD" --concurrency 1 --total @N@
# One connection, one message in flight: the same path for every message.
row "echoed 64 B message" 2000 22000 1 \
  "$WSLOAD" echo --url "$URL" --token "$TOKEN" --connections 1 --messages @N@ --size 64 --window 1
