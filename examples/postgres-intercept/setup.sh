#!/bin/sh
# Namespaces tern-postgres-app, tern-postgres-proxy and tern-postgres-db; the app's connections to port 5432 are
# redirected into Tern in tern-postgres-proxy (see ../intercept-netns.sh). Run as root.
exec "$(dirname "$0")/../intercept-netns.sh" up tern-postgres 10.79 5432
