#!/usr/bin/env bash
# redis-benchmark, pipelined, against redis directly, through HAProxy in TCP mode and through Tern's
# tcp_proxy, in one run. As in ../shared/bench: the proxy gets CPU 1 alone (Tern then runs one
# worker, HAProxy one thread); redis-server and redis-benchmark share CPU 0, so requests/s is
# capped by CPU 0 and the proxy's CPU per request is the figure to compare.
# After each run the server's own command counters must show every request (the `all` column).
# Usage (from the project root): scripts/redis_bench.sh [-n REQUESTS] [-P PIPELINE] [-c CLIENTS] [NAME...]
# NAMES: direct haproxy tern (default: all three). TERN_BIN: the binary (.build/release/tern).
set -u
N=200000; PIPELINE=16; CLIENTS=50; TESTS=set,get
while getopts "n:P:c:" o; do case $o in n) N=$OPTARG;; P) PIPELINE=$OPTARG;; c) CLIENTS=$OPTARG;; *) exit 2;; esac; done
shift $((OPTIND-1))
NAMES=${*:-"direct haproxy tern"}
TERN_BIN=${TERN_BIN:-.build/release/tern}
UP=12300; PX=12301; HZ=$(getconf CLK_TCK)

for tool in redis-server redis-benchmark redis-cli haproxy taskset; do
  command -v $tool >/dev/null || { echo "$tool missing (make deps installs redis; haproxy: apt-get install haproxy)" >&2; exit 1; }
done
cpu_ticks() { awk '{print $14+$15}' /proc/$1/stat 2>/dev/null || echo 0; }   # utime+stime in clock ticks
wait_port() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }
stop() { [ -n "${1:-}" ] && { kill "$1" 2>/dev/null; wait "$1" 2>/dev/null; }; return 0; }
# Calls of one command the server counted since the last CONFIG RESETSTAT.
calls() { redis-cli -p $UP INFO commandstats | tr -d '\r' | awk -F'[:=,]' -v c="cmdstat_$1" '$1 == c {print $3}'; }

W=$(mktemp -d /tmp/redisbench.XXXX)
taskset -c 0 redis-server --port $UP --bind 127.0.0.1 --save '' --appendonly no --dir "$W" --logfile "$W/redis.log" & REDIS=$!
trap 'stop $REDIS; rm -rf "$W"' EXIT
wait_port $UP || { echo "redis-server did not start" >&2; exit 1; }

echo "redis-benchmark -P $PIPELINE -c $CLIENTS -n $N -t $TESTS, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-8s %12s %12s %12s %5s\n" proxy "SET req/s" "GET req/s" "cpu_us/req" all
for n in $NAMES; do
  port=$PX; P=""
  case $n in
  direct) port=$UP;;
  haproxy) printf 'global\n nbthread 1\ndefaults\n mode tcp\n timeout connect 5s\n timeout client 30s\n timeout server 30s\nlisten l\n bind 127.0.0.1:%s\n server s 127.0.0.1:%s\n' $PX $UP > "$W/h.cfg"
     taskset -c 1 haproxy -db -f "$W/h.cfg" >"$W/px.log" 2>&1 & P=$!;;
  tern) [ -x "$TERN_BIN" ] || { echo "tern: no binary at $TERN_BIN (swift build -c release)" >&2; continue; }
     cat > "$W/t.json" <<JS
{ "servers": [{ "default_log_path": "$W/tern.log", "default_log_level": "ERROR",
  "listeners": [{ "name": "l", "address": "127.0.0.1:$PX", "bind_port": true,
     "filter_chains": [{ "filters": [{ "type": "tcp_proxy", "config": { "cluster": "redis" } }] }] }] }],
  "cluster_manager": { "clusters": [{ "name": "redis", "type": "SIMPLE", "lb_type": "LB_ROUNDROBIN",
     "hosts": [{ "address": "127.0.0.1:$UP" }] }] } }
JS
     taskset -c 1 "$TERN_BIN" start -c "$W/t.json" >"$W/px.log" 2>&1 & P=$!;;
  *) echo "unknown name $n" >&2; continue;;
  esac
  if [ -n "$P" ]; then wait_port $PX || { echo "$n did not listen" >&2; tail -5 "$W/px.log" >&2; stop $P; continue; }; fi
  bench() { taskset -c 0 redis-benchmark -h 127.0.0.1 -p $port -P $PIPELINE -c $CLIENTS -t $TESTS -q "$@" 2>&1 | tr '\r' '\n'; }
  bench -n 20000 >/dev/null   # warm-up: connections, the proxy's buffers
  redis-cli -p $UP CONFIG RESETSTAT >/dev/null
  t0=$( [ -n "$P" ] && cpu_ticks $P || echo 0 )
  out=$(bench -n $N)
  t1=$( [ -n "$P" ] && cpu_ticks $P || echo 0 )
  rps() { echo "$out" | awk -v t="$1:" '$1 == t && /requests per second/ {print $2}'; }
  complete=$( [ "$(calls set)" = "$N" ] && [ "$(calls get)" = "$N" ] && ! echo "$out" | grep -qi error && echo yes || echo NO )
  cpu=$( [ -n "$P" ] && awk -v a=$t0 -v b=$t1 -v r=$((2 * N)) -v hz=$HZ 'BEGIN{printf "%.2f", (b-a)*1e6/hz/r}' || echo - )
  printf "%-8s %12s %12s %12s %5s\n" $n "$(rps SET)" "$(rps GET)" "$cpu" $complete
  [ $complete = yes ] || echo "$out" | grep -i -m5 error >&2
  stop "$P"; sleep 0.3
done
