#!/usr/bin/env bash
# Build one self-contained zipapp as shiv.spec (the one declaration of the build) says.
# Usage: scripts/zipapp.sh [OUTPUT]   then: python3 trio-llm.pyz serve
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${TRIO_LLM_VENV:-.venv}
[ -x "$venv/bin/shiv" ] || "$venv/bin/python" -m pip install --quiet --disable-pip-version-check shiv
exec "$venv/bin/python" - "$venv/bin/shiv" "${1:-}" <<'PY'
import os, subprocess, sys, tomllib, zipfile

shiv, output = sys.argv[1], sys.argv[2]
with open("shiv.spec", "rb") as f:
    spec = tomllib.load(f)["zipapp"]
output = output or spec["output"]
command = [shiv, "--console-script", spec["console_script"], "--python", spec["python"],
           "--output-file", output, "--quiet"]
if spec.get("compile_pyc"):
    command.append("--compile-pyc")
command.append(spec["source"])
subprocess.run(command, check=True, env={**os.environ, **spec.get("env", {})})
with zipfile.ZipFile(output) as archive:
    if spec["extension"] not in archive.namelist():
        sys.exit(f"{output} lacks {spec['extension']}: the C kernels were not built into it")
print(f"built {output}")
PY
