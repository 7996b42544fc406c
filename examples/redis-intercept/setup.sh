#!/bin/sh
# Namespaces tern-redis-app, tern-redis-proxy and tern-redis-db; the app's connections to port 6379 are
# redirected into Tern in tern-redis-proxy (see ../intercept-netns.sh). Run as root.
exec "$(dirname "$0")/../intercept-netns.sh" up tern-redis 10.78 6379
