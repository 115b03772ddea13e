# Shared by the scale scripts (sourced, from the repository root): release builds, a scratch
# folder and the processes started, both cleaned up on exit, a private Redis, readiness.

# Builds the release binary and the load tool; sets WSGATE and WSLOAD.
scale_build() {
  echo "== building (release)" >&2
  cargo build --release -q -p wsgate-server --bins "$@"
  (cd bench && cargo build --release -q -p wsload)
  WSGATE=$PWD/target/release/wsgate
  WSLOAD=$PWD/bench/target/release/wsload
}

DIR=$(mktemp -d)
PIDS=()
scale_cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap scale_cleanup EXIT INT TERM

# A private Redis without persistence on port $1 (extra arguments go before the command,
# e.g. `taskset -c 1`).
start_redis() {
  local port=$1
  shift
  command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install redis-server)" >&2; exit 2; }
  "$@" redis-server --port "$port" --save "" --appendonly no >"$DIR/redis-$port.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && return; sleep 0.1; done
}

# Waits (10 s at most) until http://127.0.0.1:$1/readyz answers 200.
wait_ready() {
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/readyz")" = 200 ] && return
    sleep 0.1
  done
}
