#!/bin/sh
# Shared by examples/redis-intercept and examples/postgres-intercept (run as root):
#
#   intercept-netns.sh up   NAME SUBNET PORT   # NAME-app ── NAME-proxy ── NAME-db
#   intercept-netns.sh down NAME
#
# Three network namespaces joined by veth pairs; every address lives inside them (SUBNET is the
# first two octets, e.g. 10.78: app 10.78.1.2, proxy 10.78.1.1 and 10.78.2.1, db 10.78.2.2).
# NAME-proxy forwards between the two and redirects the app's TCP connections to PORT into
# Tern's capturing listener on 15001 (iptables nat PREROUTING REDIRECT). Nothing outside the
# namespaces is changed; `down` deletes them, which removes the veths, routes and rules with them.
set -eu
action=$1; name=$2

down() {
    for ns in "$name-app" "$name-proxy" "$name-db"; do
        ip netns del "$ns" 2>/dev/null || true
    done
}

case "$action" in
down) down ;;
up)
    subnet=$3; port=$4
    down   # a stale set-up from an earlier run is replaced, not an error
    for ns in "$name-app" "$name-proxy" "$name-db"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
    ip link add name to-proxy netns "$name-app" type veth peer name to-app netns "$name-proxy"
    ip link add name to-db netns "$name-proxy" type veth peer name to-proxy netns "$name-db"
    ip -n "$name-app" addr add "$subnet.1.2/24" dev to-proxy
    ip -n "$name-proxy" addr add "$subnet.1.1/24" dev to-app
    ip -n "$name-proxy" addr add "$subnet.2.1/24" dev to-db
    ip -n "$name-db" addr add "$subnet.2.2/24" dev to-proxy
    ip -n "$name-app" link set to-proxy up
    ip -n "$name-proxy" link set to-app up
    ip -n "$name-proxy" link set to-db up
    ip -n "$name-db" link set to-proxy up
    ip -n "$name-app" route add default via "$subnet.1.1"
    ip -n "$name-db" route add default via "$subnet.2.1"
    ip netns exec "$name-proxy" sysctl -qw net.ipv4.ip_forward=1
    ip netns exec "$name-proxy" iptables -t nat -A PREROUTING -i to-app -p tcp --dport "$port" -j REDIRECT --to-ports 15001
    echo "app $name-app ($subnet.1.2) -> Tern in $name-proxy (:15001) -> server $name-db ($subnet.2.2:$port)"
    ;;
*) echo "usage: $0 up NAME SUBNET PORT | down NAME" >&2; exit 2 ;;
esac
