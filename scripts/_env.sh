# Shared set-up for scripts/test.sh and scripts/quickstart.sh: finds Python 3.12+,
# creates .venv in the repository root when it is missing and installs the project
# into it (again only when pyproject.toml changed). Sourced, not executed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.12 python3.13 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    # pyenv keeps other versions out of PATH unless selected
    for candidate in "$HOME"/.pyenv/versions/3.1[2-9]*/bin/python3; do
        if [ -x "$candidate" ]; then
            echo "$candidate"
            return 0
        fi
    done
    echo "error: Python >= 3.12 not found (set PYTHON=/path/to/python3.12)" >&2
    return 1
}

if [ ! -x .venv/bin/python ]; then
    PY="$(find_python)"
    echo "==> creating .venv with $PY"
    "$PY" -m venv .venv
fi
VENV_PY="$ROOT/.venv/bin/python"
EXTRAS="${INSTALL_EXTRAS:-test,lint,docs}"
STAMP=".venv/.install-stamp-$(echo "$EXTRAS" | tr ',' '-')"
# editable installs copy the start-up hook into site-packages: reinstall when it changes
WANT="$(cat pyproject.toml torchgeo_scalemae/_startup/* | sha256sum | cut -c1-16)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    echo "==> installing torchgeo-scalemae[$EXTRAS] into .venv"
    "$VENV_PY" -m pip install --quiet --upgrade pip
    "$VENV_PY" -m pip install --quiet -e ".[$EXTRAS]"
    echo "$WANT" > "$STAMP"
fi
export PATH="$ROOT/.venv/bin:$PATH"
