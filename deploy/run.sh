#!/usr/bin/env bash
# Runs the whole system on this machine: issuer, verifier and nginx (with nchan),
# answering on http://127.0.0.1:${SOFTPHONE_PORT:-8080} and on
# https://127.0.0.1:${SOFTPHONE_TLS_PORT:-8443} (a self-signed certificate made on
# first run under <data>/tls/). Ctrl-C (or SIGTERM) stops everything it started.
#
#   SOFTPHONE_DATA   data directory (default ./var): key, database, logs, nginx
#   SOFTPHONE_PORT   nginx's plain-HTTP port on 127.0.0.1 (default 8080)
#   SOFTPHONE_TLS_PORT  nginx's HTTPS port on 127.0.0.1 (default 8443)
#   SOFTPHONE_WS_UPSTREAM  where /pbxcore/softphone/ws goes
#                    (default http://127.0.0.1:8088/asterisk/ws, Asterisk's)
# Every other SOFTPHONE_* setting of the daemons applies as well (README).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=deploy/lib.sh
. deploy/lib.sh

port=${SOFTPHONE_PORT:-8080}
tls_port=${SOFTPHONE_TLS_PORT:-8443}
data=${SOFTPHONE_DATA:-$root/var}
mkdir -p "$data"
data=$(cd "$data" && pwd)
export SOFTPHONE_DATA=$data
# The built-in defaults and the variables, not an installed package's
# /etc/softphone-backend/softphone.toml (the binaries' default when it exists).
export SOFTPHONE_CONFIG=${SOFTPHONE_CONFIG:-/dev/null}

ensure_packages openssl:openssl
echo "building the release binaries (the first build takes a few minutes)..."
cargo build --release --locked -p softphone-issuer -p softphone-verifier
issuer=$root/target/release/softphone-issuer
verifier=$root/target/release/softphone-verifier
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

mkdir -p "$data/db" "$data/log" "$data/nginx" "$data/recordings" "$data/acme"
bash deploy/tls-selfsigned.sh "$data/tls"
# nginx's workers run unprivileged: they must reach the recordings.
chmod 755 "$data" "$data/recordings"
# nginx's workers run unprivileged (nobody): they reach the verifier's socket
# (<data>/run/verifier.sock by default) and the recordings under $data. When a
# directory above it keeps them out (a checkout under /root), the socket moves
# to /run and the recordings are not served; say so.
if ! setpriv --reuid=nobody --regid=nogroup --clear-groups test -x "$data" 2>/dev/null; then
    echo "note: nginx's workers (nobody) cannot reach $data: the verifier's socket moves" \
         "to /run/softphone-backend-$port/, and recordings are not served" >&2
    export SOFTPHONE_VERIFIER_SOCKET=${SOFTPHONE_VERIFIER_SOCKET:-/run/softphone-backend-$port/verifier.sock}
fi

# A fresh data directory has no database yet, and admin commands other than
# `user add` refuse to make one: count that as no users.
users=$("$issuer" user count 2>/dev/null || echo 0)
if [ "$users" = "0" ]; then
    echo "b749601f329a635a19c4a87bc359be3d" | "$issuer" user add 201 >/dev/null
    echo "no users yet: created demo user 201 with the seed's example password" \
         "(change it: $issuer user passwd 201)"
fi

"$issuer" nginx-config main \
    --listen "127.0.0.1:$port" \
    --tls-listen "127.0.0.1:$tls_port" \
    --tls-certificate "$data/tls/cert.pem" \
    --tls-certificate-key "$data/tls/key.pem" \
    --acme-webroot "$data/acme" \
    --plain-http serve \
    --prefix "$data/nginx" \
    --recordings "$data/recordings" \
    --access-log "$data/log/nginx-access.log" \
    --error-log "$data/nginx/error.log" \
    --ws-upstream "${SOFTPHONE_WS_UPSTREAM:-http://127.0.0.1:8088/asterisk/ws}" \
    > "$data/nginx/nginx.conf"
nginx_args=(-p "$data/nginx" -c "$data/nginx/nginx.conf" -e "$data/nginx/error.log")
"$nginx_bin" -t -q "${nginx_args[@]}"

pids=()
nginx_pid=
stop() {
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    [ -n "$nginx_pid" ] && kill -QUIT "$nginx_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    echo "stopped"
}
trap stop EXIT
trap 'stop; exit 0' INT TERM

"$issuer" & pids+=($!)
"$verifier" & pids+=($!)
"$nginx_bin" "${nginx_args[@]}" & nginx_pid=$!

base="http://127.0.0.1:$port/pbxcore/api/module-softphone-backend/v1"
for _ in $(seq 1 100); do
    for pid in "${pids[@]}" "$nginx_pid"; do
        kill -0 "$pid" 2>/dev/null || { echo "a process failed to start" >&2; exit 1; }
    done
    if curl -fsS -o /dev/null "$base/health" 2>/dev/null \
        && curl -fsS -o /dev/null "http://${SOFTPHONE_VERIFIER_LISTEN:-127.0.0.1:8082}/health" 2>/dev/null; then
        echo "base URL: $base"
        echo "HTTPS base URL: https://127.0.0.1:$tls_port/pbxcore/api/module-softphone-backend/v1" \
             "(self-signed: curl --cacert $data/tls/cert.pem)"
        echo "ready"
        wait -n || true
        echo "a process exited; stopping the rest" >&2
        exit 1
    fi
    sleep 0.1
done
echo "the system did not come up; see $data/nginx/error.log" >&2
exit 1
