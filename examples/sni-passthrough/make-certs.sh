#!/bin/sh
# Makes a throwaway CA and one server certificate per backend (a.example, *.b.example) in DIR
# (default: certs/ next to this script). ECDSA P-256, valid for 30 days.
set -eu
dir=${1:-$(dirname "$0")/certs}
mkdir -p "$dir"
cd "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -keyout ca.key -out ca.crt \
  -subj "/CN=SNI passthrough example CA" -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
for pair in "a:a.example" "b:*.b.example"; do
  base=${pair%%:*}
  name=${pair#*:}
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$base.key" -out "$base.csr" -subj "/CN=$name" 2>/dev/null
  printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n' "$name" > "$base.ext"
  openssl x509 -req -in "$base.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -extfile "$base.ext" -out "$base.crt" 2>/dev/null
done
echo "certificates in $dir: ca.crt, a.crt/a.key (a.example), b.crt/b.key (*.b.example)"
