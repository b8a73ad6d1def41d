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
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec"
"$venv/bin/python" -c "import trio_llm._kernels" # the extension built and loads
