#!/usr/bin/env bash
# Runs MOSN's own TLS sample configs with Tern, unchanged: examples/codes/{http-sample,
# protocol-auto-sample,sofarpc-with-xprotocol-sample,flowcontrol-sample}/tls_{client,server}_config.json
# and the certificates they name (../certs/{ca,cert,key}.pem), taken from a MOSN checkout or a bare
# git directory of MOSN (its HEAD) into a temporary directory with the same layout. Nothing of
# MOSN's is kept in this repository.
#
# Usage (from the project root, after `swift build` and `make venv`):
#   scripts/run_mosn_tls_samples.sh PATH-TO-MOSN-CHECKOUT-OR-GIT-DIR
#
# Each sample runs twice: with MOSN's certificates as shipped, then with certificates of the same
# shape made here by openssl (a CA in ca.pem; cert.pem signed by it, subjectAltName IP:127.0.0.1,
# server and client usage; key.pem), so a failure can be told apart: the certificates or the configs.
# Per sample and round: `tern validate` of both configs, then server-side Tern and client-side Tern
# (each started in the sample's directory, on the configs' own ports 2045 and 2046) with a plain app
# on 8080 (the HTTP upstream of examples/http-sample, or anthunder's bolt server), one request through
# client Tern -> TLS -> server Tern (curl, or anthunder calls for the bolt sample), and a plain-text
# curl straight to 2046 that must fail (the hop is TLS). Prints PASS or FAIL with the reason per line;
# exits 1 if any round of a runnable sample failed.
# TERN_BIN: the binary (default .build/release/tern, else .build/debug/tern).
set -u
[ $# -eq 1 ] || { echo "usage: $0 PATH-TO-MOSN-CHECKOUT-OR-GIT-DIR" >&2; exit 2; }
MOSN=$1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TERN_BIN=${TERN_BIN:-}
if [ -z "$TERN_BIN" ]; then
  TERN_BIN=$ROOT/.build/release/tern; [ -x "$TERN_BIN" ] || TERN_BIN=$ROOT/.build/debug/tern
fi
[ -x "$TERN_BIN" ] || { echo "no Tern binary ($TERN_BIN): run swift build" >&2; exit 2; }
TERN_BIN=$(cd "$(dirname "$TERN_BIN")" && pwd)/$(basename "$TERN_BIN")   # the samples run in their own directories
PY=$ROOT/.venv/bin/python
[ -x "$PY" ] || { echo "no .venv (anthunder): run make venv" >&2; exit 2; }
command -v openssl >/dev/null && command -v curl >/dev/null || { echo "needs openssl and curl" >&2; exit 2; }

SAMPLES="http-sample protocol-auto-sample sofarpc-with-xprotocol-sample flowcontrol-sample"
W=$(mktemp -d /tmp/tern-mosn-tls.XXXXXX)
PIDS=""
stop_all() { for p in $PIDS; do kill "$p" 2>/dev/null; done; for p in $PIDS; do wait "$p" 2>/dev/null; done; PIDS=""; }
trap 'stop_all; rm -rf "$W"' EXIT
trap 'exit 130' INT TERM

# A file of MOSN's, from a checkout's work tree or from a git directory's HEAD.
mosn_file() {
  if [ -f "$MOSN/$1" ]; then cat "$MOSN/$1"
  else git -C "$MOSN" show "HEAD:$1"; fi
}

busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { for _ in $(seq 1 150); do busy "$1" && return 0; sleep 0.1; done; return 1; }

codes=$W/examples/codes
mkdir -p "$codes/certs"
for s in $SAMPLES; do
  mkdir -p "$codes/$s"
  for side in client server; do
    mosn_file "examples/codes/$s/tls_${side}_config.json" > "$codes/$s/tls_${side}_config.json" \
      || { echo "cannot read examples/codes/$s/tls_${side}_config.json from $MOSN" >&2; exit 2; }
  done
done

install_mosn_certs() {
  for f in ca cert key; do
    mosn_file "examples/codes/certs/$f.pem" > "$codes/certs/$f.pem" || { echo "cannot read MOSN's certs/$f.pem" >&2; exit 2; }
  done
}

# The same three files, made here: a real CA and a leaf it signed (ECDSA P-256, one day).
install_fresh_certs() {
  local d=$W/fresh
  mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=MOSN sample CA (made by Tern's script)" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -keyout "$d/ca.key" -out "$codes/certs/ca.pem" 2>/dev/null || return 1
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=critical,CA:FALSE\n' > "$d/leaf.ext"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$codes/certs/key.pem" -out "$d/leaf.csr" 2>/dev/null || return 1
  openssl x509 -req -in "$d/leaf.csr" -CA "$codes/certs/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 1 \
    -extfile "$d/leaf.ext" -out "$codes/certs/cert.pem" 2>/dev/null
}

# The first line of each Tern log that says why a handshake or a request failed.
reason_from() { for f in "$@"; do grep -m1 -E 'handshake .* failed|\[ERROR\]|^error:' "$f" 2>/dev/null | sed 's/^[0-9-]* [0-9:,]* //'; done; }

failed=0
run_sample() {   # sample round
  local s=$1 round=$2 dir=$codes/$1 log=$W/$1-$2 result reason=""
  local vs vc
  vs=$(cd "$dir" && "$TERN_BIN" validate -c tls_server_config.json 2>&1); local vs_rc=$?
  vc=$(cd "$dir" && "$TERN_BIN" validate -c tls_client_config.json 2>&1); local vc_rc=$?
  echo "  validate server: $(echo "$vs" | grep -v '^warning' | paste -sd';' -)"
  echo "  validate client: $(echo "$vc" | grep -v '^warning' | paste -sd';' -)"
  if [ $vs_rc -ne 0 ] || [ $vc_rc -ne 0 ]; then
    echo "FAIL $s [$round]: config refused by tern validate (not started)"; failed=1; return
  fi
  for p in 2045 2046 8080; do
    busy $p && { echo "FAIL $s [$round]: port $p is taken by another process; the sample needs it"; failed=1; return; }
  done
  local bolt=0; [ "$s" = sofarpc-with-xprotocol-sample ] && bolt=1
  if [ $bolt = 1 ]; then "$PY" "$ROOT/Tests/IntegrationTests/peers/bolt_peers.py" server 8080 > "$log-app.log" 2>&1 &
  else python3 "$ROOT/examples/http-sample/upstream.py" > "$log-app.log" 2>&1 & fi
  PIDS="$PIDS $!"
  (cd "$dir" && exec "$TERN_BIN" start -c tls_server_config.json) > "$log-server.log" 2>&1 & PIDS="$PIDS $!"
  (cd "$dir" && exec "$TERN_BIN" start -c tls_client_config.json) > "$log-client.log" 2>&1 & PIDS="$PIDS $!"
  if ! wait_port 8080 || ! wait_port 2046 || ! wait_port 2045; then
    echo "FAIL $s [$round]: a process did not start listening: $(reason_from "$log-server.log" "$log-client.log" "$log-app.log")"
    failed=1; stop_all; return
  fi
  if [ $bolt = 1 ]; then
    result=$("$PY" "$ROOT/Tests/IntegrationTests/peers/bolt_peers.py" client 2045 5 2 2>&1 | tail -1)
    [ "$result" = "ok 10" ] || reason="anthunder: ${result:0:160}"
  else
    result=$(curl -sS --max-time 10 http://127.0.0.1:2045/hello 2>&1)
    case $result in "hello from the app: path=/hello"*) ;; *) reason="curl: $result" ;; esac
  fi
  # Plain text straight to the server side's port must not get an answer: that hop is TLS.
  local plain
  plain=$(curl -sS --max-time 5 http://127.0.0.1:2046/hello 2>&1)
  case $plain in "hello from the app"*) reason="${reason:+$reason; }plain text to 2046 was answered (not TLS)" ;; esac
  stop_all
  if [ -z "$reason" ]; then
    echo "PASS $s [$round]: $result (plain text to 2046 refused: ${plain%%$'\n'*})"
  else
    echo "FAIL $s [$round]: $reason"
    reason_from "$log-client.log" "$log-server.log" | sed 's/^/     tern log: /'
    failed=1
  fi
}

echo "MOSN from $MOSN ($(git -C "$MOSN" rev-parse --short HEAD 2>/dev/null || echo checkout)), Tern $("$TERN_BIN" version)"
for round in mosn-certs fresh-certs; do
  if [ $round = mosn-certs ]; then install_mosn_certs
    echo "== round $round: $(openssl x509 -in "$codes/certs/cert.pem" -noout -subject -issuer -enddate -ext subjectAltName 2>/dev/null | tr -s '\n ' ' ')"
    openssl verify -CAfile "$codes/certs/ca.pem" "$codes/certs/cert.pem" 2>&1 | sed 's/^/   openssl verify: /' | head -2
  else install_fresh_certs || { echo "openssl could not make certificates" >&2; exit 1; }
    echo "== round $round: ca.pem, cert.pem (SAN IP:127.0.0.1) and key.pem made by openssl"
  fi
  for s in $SAMPLES; do
    echo "-- $s"
    run_sample "$s" "$round"
  done
done
exit $failed
