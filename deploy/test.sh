#!/usr/bin/env bash
# Runs every test of softphone-backend: unit tests, integration tests of the real
# daemons on loopback, and end-to-end tests through the real nginx + nchan.
# Installs what the tests need (nginx, libnginx-mod-nchan, curl, fail2ban) when it
# is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=deploy/lib.sh
. deploy/lib.sh

if ! command -v cargo >/dev/null; then
    echo "test.sh: cargo is missing; install a Rust toolchain first" >&2
    exit 1
fi
ensure_packages fail2ban-regex:fail2ban systemd-analyze:systemd wrk:wrk

log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# One closing line over all test binaries (cargo prints one per binary).
awk '/^test result:/ { passed += $4; failed += $6 }
     END { printf "total: %d passed, %d failed\n", passed, failed }' "$log"
