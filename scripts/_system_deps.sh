# shellcheck shell=bash
# Sourced by scripts/test: installs the Debian packages that the integration suites
# drive for real (Chromium + ChromeDriver for the browser tests, redis-server for the
# Celery broker). Nothing is downloaded when the programs are already there.
#
# Set SMTP_BACKENDS_NO_SYSTEM_DEPS=1 to skip the install (the suites that need a missing
# program then fail, except outside CI where they skip with the reason).

_SYSTEM_PACKAGES=(chromium chromium-driver redis-server)
_SYSTEM_PROGRAMS=(/usr/bin/chromium /usr/bin/chromedriver redis-server)

_missing_system_programs() {
    local program
    for program in "${_SYSTEM_PROGRAMS[@]}"; do
        command -v "$program" >/dev/null 2>&1 || return 0
    done
    return 1
}

_install_system_deps() {
    [ "${SMTP_BACKENDS_NO_SYSTEM_DEPS:-}" = "1" ] && return 0
    _missing_system_programs || return 0
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            echo "warning: cannot install ${_SYSTEM_PACKAGES[*]} (not root, no sudo)" >&2
            return 0
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "warning: no apt-get; install ${_SYSTEM_PACKAGES[*]} by hand" >&2
        return 0
    fi
    echo "==> installing Debian packages: ${_SYSTEM_PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq >/dev/null || true
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${_SYSTEM_PACKAGES[@]}" >/dev/null
}

_install_system_deps
