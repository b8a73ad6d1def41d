#!/usr/bin/env bash
# Build one self-contained zipapp, trio-llm.pyz (CPython 3.11+ on this platform, the compiled C
# kernels inside). Usage: scripts/zipapp.sh [OUTPUT]   then: python3 trio-llm.pyz serve
# SHIV_ROOT picks where it extracts on first start (default ~/.shiv).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${TRIO_LLM_VENV:-.venv}
out=${1:-trio-llm.pyz}
[ -x "$venv/bin/shiv" ] || "$venv/bin/python" -m pip install --quiet --disable-pip-version-check shiv
# Built for any CPU of this architecture, not just this one (see build_ext.py).
TRIO_LLM_PORTABLE=1 "$venv/bin/shiv" --compile-pyc --console-script trio-llm --output-file "$out" --quiet .
echo "built $out"
