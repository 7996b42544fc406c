#!/usr/bin/env bash
# One long transfer through each proxy on loopback: scripts/bulkpipe sends BYTES (default 2 GB) on
# CONNS connections to a sink that checks the count. The proxy gets CPU 1 alone, sender and sink
# share CPU 0 (as ../shared/bench does). Prints throughput and the proxy's CPU seconds per GB
# (utime+stime from /proc/PID/stat), and CPU 0's busy seconds per GB (sender and sink, from
# /proc/stat): what the proxy's way of writing costs the endpoints.
# Usage (from the project root, after swift build -c release): scripts/bulk_bench.sh [-n BYTES] [-c CONNS] [NAME...]
# NAMES: direct tern-copy (TERN_TCP_SPLICE=0) tern-splice (=1) tern-auto (unset: the default) haproxy haproxy-splice (option splice-auto)
set -u
. "$(dirname "$0")/../../shared/bench/lib.sh"
BYTES=2000000000; CONNS=1
while getopts "n:c:" o; do case $o in n) BYTES=$OPTARG;; c) CONNS=$OPTARG;; *) exit 2;; esac; done
shift $((OPTIND-1))
NAMES=${*:-"direct tern-copy tern-splice tern-auto haproxy haproxy-splice"}
TERN_BIN=${TERN_BIN:-.build/release/tern}
need haproxy; need taskset util-linux; need go golang-go
BULK=/tmp/tern-bench-tools/bulkpipe; mkdir -p /tmp/tern-bench-tools
(cd "$(dirname "$0")/bulkpipe" && GOFLAGS= GOPROXY=off go build -o "$BULK" .) || exit 1
W=$(mktemp -d /tmp/bulkbench.XXXX); UP=12300; PX=12301
taskset -c 0 "$BULK" -mode sink -addr 127.0.0.1:$UP & UPPID=$!
wait_port $UP || { echo "sink did not start" >&2; exit 1; }
cpu0_busy() { awk '$1=="cpu0"{print $2+$3+$4+$7+$8}' /proc/stat; }   # user nice system irq softirq, in ticks
printf "%-15s %8s %10s %12s %12s\n" proxy "MB/s" "seconds" "cpu_s/GB" "cpu0_s/GB"
for n in $NAMES; do
  port=$PX; P=""
  case $n in
  direct) port=$UP;;
  haproxy|haproxy-splice) opt=""; [ $n = haproxy-splice ] && opt=" option splice-auto"
     printf 'global\n nbthread 1\ndefaults\n mode tcp\n timeout connect 5s\n timeout client 30s\n timeout server 30s\n%s\nlisten l\n bind 127.0.0.1:%s\n server s 127.0.0.1:%s\n' "$opt" $PX $UP > "$W/h.cfg"
     taskset -c 1 haproxy -db -f "$W/h.cfg" >"$W/px.log" 2>&1 & P=$!;;
  tern-copy|tern-splice|tern-auto) sp=0; [ $n = tern-splice ] && sp=1; [ $n = tern-auto ] && sp=auto
     mosn_tcp_config "$W/px.err" "127.0.0.1:$PX" "127.0.0.1:$UP" > "$W/t.json"
     TERN_TCP_SPLICE=$sp taskset -c 1 "$TERN_BIN" start -c "$W/t.json" >"$W/px.log" 2>&1 & P=$!;;
  *) echo "unknown name $n" >&2; continue;;
  esac
  if [ -n "$P" ]; then wait_port $PX || { echo "$n did not listen" >&2; tail -5 "$W/px.log" >&2; stop $P; continue; }; fi
  t0=$( [ -n "$P" ] && cpu_ticks $P || echo 0 ); c0=$(cpu0_busy)
  out=$(taskset -c 0 "$BULK" -addr 127.0.0.1:$port -bytes $BYTES -c $CONNS) || { echo "$n: transfer failed" >&2; stop "$P"; continue; }
  t1=$( [ -n "$P" ] && cpu_ticks $P || echo 0 ); c1=$(cpu0_busy)
  set -- $out   # bytes N seconds S MBps R
  per_gb() { awk -v a=$1 -v b=$2 -v n=$3 -v hz=$HZ 'BEGIN{ if (b>a) printf "%.3f", (b-a)/hz/(n/1e9); else print "-" }'; }
  printf "%-15s %8s %10s %12s %12s\n" $n "$6" "$4" "$(per_gb $t0 $t1 $2)" "$(per_gb $c0 $c1 $2)"
  stop "$P"; sleep 0.3
done
stop $UPPID; rm -rf "$W"
