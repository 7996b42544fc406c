#!/bin/sh
# Deletes the three namespaces (and with them the veths, routes and iptables rules). Run as root.
exec "$(dirname "$0")/../intercept-netns.sh" down tern-postgres
