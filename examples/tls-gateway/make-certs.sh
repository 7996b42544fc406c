#!/bin/sh
# Makes the example's certificates with the openssl command (ECDSA P-256, valid for 30 days) in
# DIR (default: certs/ next to this script). They are throwaway and never committed.
#
#   ca.crt, ca.key                 the mesh CA both gateways trust
#   server.crt, server.key         the server-side gateway: subjectAltName DNS:gateway.east.tern.local
#                                  and IP:127.0.0.1, serverAuth
#   client.crt, client.key         the client-side gateway: CN gateway.west.tern.local, clientAuth
#   rogue-ca.crt, rogue-client.*   another CA and a client certificate it signed, to see a
#                                  certificate from outside the mesh refused
set -eu
dir=${1:-"$(dirname "$0")/certs"}
mkdir -p "$dir"
cd "$dir"

ca() {   # NAME SUBJECT
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj "/CN=$2" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
        -keyout "$1.key" -out "$1.crt" 2>/dev/null
}

leaf() {   # NAME SUBJECT CA EXTENSIONS
    printf '%b\n' "$4" > "$1.ext"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
    openssl x509 -req -in "$1.csr" -CA "$3.crt" -CAkey "$3.key" -CAcreateserial -days 30 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}

ca ca "Tern example mesh CA"
ca rogue-ca "Rogue CA (not the mesh's)"
leaf server gateway.east.tern.local ca "subjectAltName=DNS:gateway.east.tern.local,IP:127.0.0.1\nextendedKeyUsage=serverAuth"
leaf client gateway.west.tern.local ca "extendedKeyUsage=clientAuth"
leaf rogue-client gateway.west.tern.local rogue-ca "extendedKeyUsage=clientAuth"
rm -f ./*.srl
echo "certificates in $dir: ca.crt server.crt client.crt rogue-ca.crt rogue-client.crt (and their keys)"
