#!/usr/bin/env bash
# Log hygiene, after the whole suite: every log the tests left under ROOT (the
# security logs, nginx access and error logs, the daemons' stderr) must hold no
# token (`eyJ`), no test password and no key. deploy/test.sh runs the suite with
# TMPDIR=ROOT and SOFTPHONE_KEEP_TEST_DIRS=1, then this.
#
#   deploy/log-sweep.sh ROOT
#
# Prints where a secret was found (file and line number, never the line itself)
# and exits 1; otherwise one summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
root=${1:?usage: deploy/log-sweep.sh ROOT}

mapfile -d '' logs < <(find "$root" -type f \( -name '*.log' -o -name '*.log.*' \
    -o -name '*.stderr' -o -name 'nginx.out' \) -print0)
if ((${#logs[@]} == 0)); then
    echo "log-sweep: no logs under $root: the suite did not run there" >&2
    exit 1
fi

patterns=$(mktemp)
trap 'rm -f "$patterns"' EXIT
# Every password constant of the test code.
grep -rhoP --include='*.rs' 'const PASSWORD: &str = "\K[^"]+' \
    shared issuer verifier bench deploy/e2e | sort -u >"$patterns"
passwords=$(wc -l <"$patterns")
# Every key the tests' daemons signed with (current and previous).
keys=0
while IFS= read -r -d '' file; do
    while read -r line || [[ -n $line ]]; do
        key=${line##* }
        if [[ ${#key} -ge 32 && $line != \#* ]]; then
            echo "$key" >>"$patterns"
            keys=$((keys + 1))
        fi
    done <"$file"
done < <(find "$root" -type f \( -name 'secret.key' -o -name 'secret.key.previous' \) -print0)
if ((passwords == 0 || keys == 0)); then
    echo "log-sweep: found $passwords password(s) and $keys key(s) to look for; expected both" >&2
    exit 1
fi

found=0
for log in "${logs[@]}"; do
    for hit in $(grep -naF -e 'eyJ' -f "$patterns" "$log" | cut -d: -f1); do
        echo "log-sweep: a token, password or key in $log line $hit" >&2
        found=1
    done
done
if ((found)); then
    exit 1
fi
echo "log-sweep: ${#logs[@]} logs clean of tokens, $passwords test password(s) and $keys key(s)"
