#!/usr/bin/env bash
# Create (or update) the project's virtual environment and build the C kernels into it.
# Usage: scripts/setup.sh [EXTRAS]   e.g. scripts/setup.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${TRIO_LLM_VENV:-.venv}
extras=${1:-}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
spec="."
[ -n "$extras" ] && spec=".[$extras]"
# The install (and the kernels' build) is skipped when none of its inputs changed since the
# last one that succeeded: the build files, the C sources, the extras, the compiler switches
stamp="$venv/.trio-llm-setup"
inputs=$( { printf '%s\n' "$spec" "${TRIO_LLM_CC:-}" "${TRIO_LLM_PORTABLE:-}" "${CC:-}"
            "$venv/bin/python" -VV
            git ls-files -s -- pyproject.toml setup.py build_ext.py csrc 2>/dev/null \
                || find pyproject.toml setup.py build_ext.py csrc -type f -exec cksum {} +
            git diff --no-ext-diff -- pyproject.toml setup.py build_ext.py csrc 2>/dev/null
            git ls-files -o --exclude-standard -z -- csrc 2>/dev/null | xargs -0r cksum
          } | cksum)
if [ "$(cat "$stamp" 2>/dev/null)" != "$inputs" ] \
        || ! "$venv/bin/python" -c "import trio_llm._kernels" 2>/dev/null; then
    rm -f "$stamp"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec"
    "$venv/bin/python" -c "import trio_llm._kernels" # the extension built and loads
    echo "$inputs" >"$stamp"
fi
