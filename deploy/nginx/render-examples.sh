#!/usr/bin/env bash
# Re-renders the committed example configurations from the templates (*.in) with
# the default settings. A unit test fails when they drift apart.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q -p softphone-issuer
issuer=target/debug/softphone-issuer
env -i PATH="$PATH" "$issuer" nginx-config site > deploy/nginx/softphone-site.conf
env -i PATH="$PATH" "$issuer" nginx-config upstreams > deploy/nginx/mikopbx/softphone-upstreams.conf
env -i PATH="$PATH" "$issuer" nginx-config locations > deploy/nginx/mikopbx/softphone-locations.conf
echo "rendered deploy/nginx/softphone-site.conf and deploy/nginx/mikopbx/*.conf"
