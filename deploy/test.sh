#!/usr/bin/env bash
# Runs every test of softphone-backend: unit, integration (the real daemons on
# loopback) and end-to-end. Installs what the tests need when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
    echo "test.sh: cargo is missing; install a Rust toolchain first" >&2
    exit 1
fi

cargo test --workspace --locked
