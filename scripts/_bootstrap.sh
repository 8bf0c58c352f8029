# shellcheck shell=bash
# Sourced by scripts/test and scripts/demo (not executable on its own).
#
# Moves to the repository root and makes sure .venv exists and holds the package
# (editable) with its development dependencies (the `dev` dependency group of
# pyproject.toml, PEP 735). Afterwards $VENV_BIN points at .venv/bin.
# Set PYTHON=/path/to/python to choose the interpreter used to create .venv.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

VENV_DIR="$REPO_ROOT/.venv"
VENV_BIN="$VENV_DIR/bin"
# Re-install when pyproject.toml or the interpreter changes.
_STAMP_FILE="$VENV_DIR/.smtp-backends-installed"

_pick_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.11 python3 python; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
            >/dev/null 2>&1; then
            command -v "$candidate"
            return 0
        fi
    done
    echo "error: need Python >= 3.10 (tried \$PYTHON, python3.11, python3, python)" >&2
    return 1
}

# _ensure_venv DIR PYTHON: DIR holds a virtualenv made with PYTHON, with the package
# (editable) and the `dev` dependency group, re-installed when pyproject.toml changes.
_ensure_venv() {
    local dir="$1" base_python="$2"
    local bin="$dir/bin" stamp="$dir/.smtp-backends-installed"
    if [ ! -x "$bin/python" ] || ! "$bin/python" -c 'pass' >/dev/null 2>&1; then
        echo "==> creating $(basename "$dir") with $base_python ($("$base_python" --version 2>&1))"
        rm -rf "$dir"
        "$base_python" -m venv "$dir"
    fi

    local wanted
    wanted="$("$bin/python" - <<'PY'
import hashlib, sys
with open("pyproject.toml", "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()
print(f"{sys.version_info[:3]} {digest}")
PY
)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] \
        && "$bin/python" -I -c 'import importlib.metadata as m; m.version("smtp-backends")' \
            >/dev/null 2>&1; then
        return 0
    fi

    echo "==> installing smtp-backends and its dev dependency group into $(basename "$dir")"
    rm -f "$stamp"
    # Dependency groups (PEP 735) need pip >= 25.1; a fresh venv may hold an older pip.
    "$bin/python" -m pip install -q --disable-pip-version-check --upgrade 'pip>=25.1'
    "$bin/python" -m pip install -q --disable-pip-version-check --group dev -e .
    printf '%s\n' "$wanted" >"$stamp"
}

_bootstrap_venv() {
    if [ ! -x "$VENV_BIN/python" ] || ! "$VENV_BIN/python" -c 'pass' >/dev/null 2>&1; then
        _ensure_venv "$VENV_DIR" "$(_pick_python)"
    else
        _ensure_venv "$VENV_DIR" "$VENV_BIN/python"
    fi
}

_bootstrap_venv
export VIRTUAL_ENV="$VENV_DIR"
export PATH="$VENV_BIN:$PATH"
