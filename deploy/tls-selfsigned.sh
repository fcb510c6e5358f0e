#!/usr/bin/env bash
# Makes a self-signed certificate for loopback use (deploy/run.sh, the tests):
#   deploy/tls-selfsigned.sh DIR   ->  DIR/cert.pem, DIR/key.pem
# Kept when both exist. Valid for localhost and 127.0.0.1; an app or curl
# trusts it with --cacert DIR/cert.pem. A real host uses a real certificate
# (tls_certificate, tls_certificate_key in the config).
set -euo pipefail
dir=${1:?usage: tls-selfsigned.sh DIR}
mkdir -p "$dir"
if [ -s "$dir/cert.pem" ] && [ -s "$dir/key.pem" ]; then
    exit 0
fi
command -v openssl >/dev/null || { echo "tls-selfsigned.sh: openssl is missing (apt-get install openssl)" >&2; exit 1; }
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -days 825 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$dir/key.pem.new" -out "$dir/cert.pem.new" 2>/dev/null
chmod 644 "$dir/cert.pem.new"
mv "$dir/key.pem.new" "$dir/key.pem"
mv "$dir/cert.pem.new" "$dir/cert.pem"
echo "tls-selfsigned.sh: made a self-signed certificate in $dir" >&2
