#!/usr/bin/env bash
# Builds the Debian package of softphone-backend into target/debian/ and prints
# its path: release binaries of both daemons, their systemd units, the
# settings, the nginx site, fail2ban and logrotate files (the list is
# [package.metadata.deb] in issuer/Cargo.toml). Installs cargo-deb when it is
# missing. Install the result with `apt install ./<path>`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
    echo "package.sh: cargo is missing; install a Rust toolchain first" >&2
    exit 1
fi
if ! command -v cargo-deb >/dev/null; then
    echo "package.sh: installing cargo-deb (a few minutes)" >&2
    cargo install --locked cargo-deb@3.6.2
fi

# cargo-deb reads `target/release/` in issuer/Cargo.toml as this directory.
target=$(cargo metadata --locked --no-deps --format-version 1 \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
# The package version is the workspace's plus the Debian revision; the
# changelog's top entry must say the same, or lintian and apt would show two
# versions for one package.
pkgid=$(cargo pkgid --locked -p softphone-issuer)
version=${pkgid##*[@#]}
changelog=$(sed -n '1s/^softphone-backend (\([^)]*\)).*/\1/p' deploy/debian/changelog)
if [ "$changelog" != "$version-1" ]; then
    echo "package.sh: deploy/debian/changelog is at $changelog, the workspace at $version:" \
         "add an entry for $version-1" >&2
    exit 1
fi

if ! command -v help2man >/dev/null; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "package.sh: help2man is missing; run as root or install it first" >&2
        exit 1
    fi
    echo "package.sh: installing help2man" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq help2man >/dev/null
fi

# The same build as deploy/run.sh's, so either reuses the other's binaries;
# cargo-deb then only strips and packs them.
echo "package.sh: building the release binaries (the first build takes a few minutes)" >&2
cargo build --release --locked -p softphone-issuer -p softphone-verifier
# Manual pages made from each binary's own --help, so they cannot drift from
# it; FILES and SEE ALSO come from deploy/debian/man.h2m. issuer/Cargo.toml
# takes them from target/release/man/.
mkdir -p "$target/release/man"
for bin in softphone-issuer softphone-verifier; do
    help2man --no-info --section 1 --version-string "$version" \
        --name "$("$target/release/$bin" --help | head -n 1)" \
        --include deploy/debian/man.h2m "$target/release/$bin" \
        | gzip -9n > "$target/release/man/$bin.1.gz"
done
# Progress goes to stderr, so the one line on stdout is the package's path.
cargo deb --no-build --locked -p softphone-issuer >&2
deb="$target/debian/softphone-backend_${version}-1_$(dpkg --print-architecture).deb"
if [ ! -f "$deb" ]; then
    echo "package.sh: cargo-deb did not write $deb" >&2
    exit 1
fi

# cargo-deb writes no DEBIAN/md5sums, which `dpkg --verify` and debsums check
# installed files against: add it as debhelper's dh_md5sums does (every file
# but the conffiles, whose sums dpkg keeps itself) and repack.
unpacked=$(mktemp -d)
trap 'rm -rf "$unpacked"' EXIT
dpkg-deb --raw-extract "$deb" "$unpacked/root"
(
    cd "$unpacked/root"
    find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort \
        | grep -vxF -f <(sed 's#^/##' DEBIAN/conffiles) \
        | xargs -d '\n' md5sum > DEBIAN/md5sums
)
chmod 0644 "$unpacked/root/DEBIAN/md5sums"
dpkg-deb --root-owner-group -Zxz --build "$unpacked/root" "$deb" >&2
echo "$deb"
