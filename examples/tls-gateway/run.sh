#!/usr/bin/env bash
# The whole example in one go, from the project root (after `swift build -c release` and
# `make venv`): makes the certificates if certs/ has none, starts the two apps (HTTP on 8080,
# anthunder's bolt server on 8081) and both Terns (server side 2046, client side 2045), sends an
# HTTP request and bolt calls through them, shows that the server side refuses a client without a
# certificate and one with a certificate from another CA, then stops everything it started.
# TERN_BIN: the binary (default .build/release/tern, else .build/debug/tern). Exit 0: all as expected.
set -u
[ -n "${TERN_BIN:-}" ] && TERN_BIN=$(cd "$(dirname "$TERN_BIN")" && pwd)/$(basename "$TERN_BIN")   # before the cd below
cd "$(dirname "$0")/../.."
EX=examples/tls-gateway
CERTS=$EX/certs
TERN_BIN=${TERN_BIN:-.build/release/tern}
[ -x "$TERN_BIN" ] || TERN_BIN=.build/debug/tern
[ -x "$TERN_BIN" ] || { echo "build Tern first: swift build -c release" >&2; exit 2; }
[ -x .venv/bin/python ] || { echo "the bolt peers need anthunder: make venv" >&2; exit 2; }

busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { for _ in $(seq 1 150); do busy "$1" && return 0; sleep 0.1; done; echo "nothing listens on $1" >&2; return 1; }
for p in 2045 2046 8080 8081; do busy $p && { echo "port $p is taken; the example needs 2045 2046 8080 8081" >&2; exit 2; }; done

[ -f $CERTS/ca.crt ] || $EX/make-certs.sh || exit 1
LOGS=$(mktemp -d /tmp/tern-tls-gateway.XXXXXX)
PIDS=""
trap 'for p in $PIDS; do kill $p 2>/dev/null; done; wait 2>/dev/null; echo "stopped; logs in $LOGS"' EXIT

python3 examples/http-sample/upstream.py > $LOGS/http-app.log 2>&1 & PIDS="$PIDS $!"
.venv/bin/python Tests/IntegrationTests/peers/bolt_peers.py server 8081 > $LOGS/rpc-app.log 2>&1 & PIDS="$PIDS $!"
"$TERN_BIN" start -c $EX/server.json > $LOGS/server-side.log 2>&1 & PIDS="$PIDS $!"
"$TERN_BIN" start -c $EX/client.json -l DEBUG > $LOGS/client-side.log 2>&1 & PIDS="$PIDS $!"
for p in 8080 8081 2046 2045; do wait_port $p || exit 1; done

ok=0
check() {   # DESCRIPTION EXPECTED-SUBSTRING ACTUAL
    if [[ "$3" == *"$2"* ]]; then echo "ok   $1: ${3%%$'\n'*}"; else echo "FAIL $1: $3"; ok=1; fi
}
check "HTTP through both Terns" "x-via-tern=east-gateway-mtls" "$(curl -sS --max-time 10 http://127.0.0.1:2045/hello 2>&1)"
check "bolt (anthunder, 2 threads x 10 calls)" "ok 20" "$(.venv/bin/python Tests/IntegrationTests/peers/bolt_peers.py client 2045 10 2 2>&1 | tail -1)"
check "the hop is TLS (client side's log)" "TLS with 127.0.0.1:2046 established" "$(grep -o 'TLS with 127.0.0.1:2046 established.*' $LOGS/client-side.log | head -1)"

# Straight to the server side, as a client of the east-west port. curl resolves the server's
# name to 127.0.0.1 and checks its certificate against the mesh CA.
east=(--resolve gateway.east.tern.local:2046:127.0.0.1 --cacert $CERTS/ca.crt https://gateway.east.tern.local:2046/direct)
check "mesh client certificate accepted" "hello from the app: path=/direct" \
    "$(curl -sS --max-time 10 --cert $CERTS/client.crt --key $CERTS/client.key "${east[@]}" 2>&1)"
check "no client certificate refused" "alert certificate required" "$(curl -sS --max-time 10 "${east[@]}" 2>&1)"
check "rogue CA's client certificate refused" "alert unknown ca" \
    "$(curl -sS --max-time 10 --cert $CERTS/rogue-client.crt --key $CERTS/rogue-client.key "${east[@]}" 2>&1)"
check "plain text on the mTLS port gets no answer" "Empty reply" "$(curl -sS --max-time 10 http://127.0.0.1:2046/plain 2>&1)"
echo "server side's log:"
grep -E 'handshake .* failed' $LOGS/server-side.log | sed 's/^[0-9-]* [0-9:,]* /  /'
exit $ok
