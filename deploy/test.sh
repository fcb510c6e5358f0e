#!/usr/bin/env bash
# Runs every test of softphone-backend: unit tests, integration tests of the real
# daemons on loopback, end-to-end tests through the real nginx + nchan, the
# Debian package installed, used and purged, a sweep of every log they wrote,
# and a bounded fuzzing run.
# Installs what the tests need when it is missing: nginx, libnginx-mod-nchan and
# curl; cargo-machete, which fails the run on an unused dependency; fail2ban and systemd to check our files with their tools; openssl
# (test certificates) and sslscan (judges the TLS profile); faketime for
# the clock tests; promtool (Debian's prometheus package) to judge the
# daemons' metrics and our alert rules; wrk and the bench's comparison peers
# (nginx Lua, luaossl, cjson, PHP-FPM) for its smoke run; lintian, ssl-cert
# (the installed site's certificate) and adduser for the package test
# (deploy/package.sh brings cargo-deb and help2man).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=deploy/lib.sh
. deploy/lib.sh

if ! command -v cargo >/dev/null; then
    echo "test.sh: cargo is missing; install a Rust toolchain first" >&2
    exit 1
fi
ensure_packages fail2ban-regex:fail2ban systemd-analyze:systemd wrk:wrk faketime:faketime \
    openssl:openssl sslscan:sslscan promtool:prometheus \
    lintian:lintian adduser:adduser /etc/ssl/certs/ssl-cert-snakeoil.pem:ssl-cert \
    /usr/lib/nginx/modules/ngx_http_lua_module.so:libnginx-mod-http-lua \
    /usr/share/lua/5.1/resty/core.lua:lua-resty-core \
    /usr/share/lua/5.1/openssl.lua:lua-luaossl \
    /usr/lib/x86_64-linux-gnu/lua/5.1/cjson.so:lua-cjson \
    /usr/sbin/php-fpm8.2:php8.2-fpm

# A dependency no code uses fails the run (cargo-machete reads the sources).
if ! command -v cargo-machete >/dev/null; then
    echo "test.sh: installing cargo-machete (about a minute)"
    cargo install --locked cargo-machete@0.9.2
fi
cargo machete

# The fuzz crate has its own lock file: fail now, not after the suite, when a
# dependency change left it behind.
cargo metadata --locked --format-version 1 --manifest-path verifier/fuzz/Cargo.toml >/dev/null

# The Debian package the e2e package test installs (deploy/e2e/tests/e2e/package.rs).
deb=$(bash deploy/package.sh)
echo "test.sh: packaged $deb"

log=$(mktemp)
# Every test directory is kept under one root, so the log sweep below sees
# every log the suite wrote.
root=$(mktemp -d /tmp/softphone-tests.XXXXXX)
# nginx workers (www-data) serve test files from under it.
chmod 755 "$root"
cleanup() {
    findmnt -rn -o TARGET | grep "^$root/" | xargs -r umount || true
    rm -rf "$root" "$log"
}
trap cleanup EXIT
TMPDIR=$root SOFTPHONE_KEEP_TEST_DIRS=1 cargo test --workspace --locked 2>&1 | tee "$log"
deploy/log-sweep.sh "$root" 2>&1 | tee -a "$log"
# Coverage-guided fuzzing, 60 s per target, from the committed seeds.
deploy/fuzz.sh 60 2>&1 | tee -a "$log"
# One closing line over all test binaries (cargo prints one per binary).
awk '/^test result:/ { passed += $4; failed += $6 }
     END { printf "total: %d passed, %d failed\n", passed, failed }' "$log"
