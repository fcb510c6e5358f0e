# Shared by run.sh and test.sh: install the Debian packages we depend on when they
# are missing. Sourced, not run.

ensure_packages() {
    local missing=()
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
    [ -f /usr/lib/nginx/modules/ngx_nchan_module.so ] || missing+=(libnginx-mod-nchan)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    # Each extra is `command:package` or `/path:package`.
    for extra in "$@"; do
        local what=${extra%%:*} package=${extra#*:}
        if [ "${what#/}" != "$what" ]; then
            [ -e "$what" ] || missing+=("$package")
        else
            command -v "$what" >/dev/null 2>&1 || missing+=("$package")
        fi
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing packages: ${missing[*]}; run as root or install them first" >&2
        return 1
    fi
    echo "installing ${missing[*]} ..." >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}
