#!/usr/bin/env bash
# Opaque tokens (RFC 7662) cost one IdP call per token per cache period, never one per
# handshake: N handshakes (default 1000, 10 at a time) with ONE client-credentials access
# token of a real OpenID provider (tests/idp: npm oidc-provider), then the IdP calls wsgate
# made (wsgate_introspection_requests_total), with the load tool's handshake rate.
#
#   bench/introspection.sh [path/to/wsgate] [N]
#
# Needs node (tests/idp is installed by scripts/test) and the load tool (built when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/wsgate}
N=${2:-1000}
(cd bench && cargo build --release -q -p wsload)
(cd tests/idp && [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error)
WSLOAD=$PWD/bench/target/release/wsload
PORT=${PORT:-18650}
DIR=$(mktemp -d)
IDP=
SPID=
cleanup() {
  [ -z "$SPID" ] || kill "$SPID" 2>/dev/null || true
  [ -z "$IDP" ] || kill "$IDP" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

mkfifo "$DIR/idp.in"
node tests/idp/op.mjs crates/wsgate-server/tests/fixtures/rsa_private.pem <"$DIR/idp.in" >"$DIR/idp.out" 2>/dev/null &
IDP=$!
exec 3>"$DIR/idp.in" # the IdP runs while this stays open
for _ in $(seq 100); do grep -q '^issuer ' "$DIR/idp.out" && break; sleep 0.1; done
ISSUER=$(awk '/^issuer /{print $2}' "$DIR/idp.out")
TOKEN=$(curl -s -u chat-app:chat-app-secret -d grant_type=client_credentials -d scope=chat "$ISSUER/token" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

cat >"$DIR/wsgate.toml" <<TOML
listen = "127.0.0.1:$PORT"
[auth]
sources = ["bearer"]
[[auth.providers]]
name = "opaque"
introspection_url = "$ISSUER/token/introspection"
client_id = "wsgate"
client_secret_env = "INTROSPECTION_SECRET"
introspection_cache_secs = 60
claims = { subject = "client_id", channels = "scope" }
[storage]
path = "$DIR/wsgate.db"
[limits]
max_connections_per_user = 0
auth_failures_per_min = 0
[[endpoints]]
path = "/echo"
kind = "echo"
TOML
INTROSPECTION_SECRET=wsgate-introspection-secret WSGATE_LOG=warn "$BIN" serve --config "$DIR/wsgate.toml" 2>"$DIR/server.log" &
SPID=$!
for _ in $(seq 100); do (exec 4<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
"$WSLOAD" handshake --url "ws://127.0.0.1:$PORT/echo" --token "$TOKEN" --concurrency 10 --total "$N" >"$DIR/load.json"
CALLS=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^wsgate_introspection_requests_total/ {n += $2} END {print n + 0}')
field() { awk -v k="$1" '$1 == k {print $2}' "$DIR/load.json"; }
echo "| handshakes with one opaque token | accepted | IdP introspection calls | handshakes/s (10 at a time) | p99 ms |"
echo "|---|---|---|---|---|"
echo "| $N | $(field ok) | $CALLS | $(field ops_per_s) | $(field p99_ms) |"
