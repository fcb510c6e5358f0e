#!/usr/bin/env bash
# Re-renders the committed example configurations from the templates (*.in) with
# the packaged settings (deploy/softphone.toml, the installed system's config).
# A unit test fails when they drift apart.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -p softphone-issuer
issuer=target/debug/softphone-issuer
env -i PATH="$PATH" SOFTPHONE_CONFIG=deploy/softphone.toml "$issuer" nginx-config site > deploy/nginx/softphone-site.conf
env -i PATH="$PATH" SOFTPHONE_CONFIG=deploy/softphone.toml "$issuer" nginx-config upstreams > deploy/nginx/mikopbx/softphone-upstreams.conf
env -i PATH="$PATH" SOFTPHONE_CONFIG=deploy/softphone.toml "$issuer" nginx-config locations > deploy/nginx/mikopbx/softphone-locations.conf
echo "rendered deploy/nginx/softphone-site.conf and deploy/nginx/mikopbx/*.conf"
