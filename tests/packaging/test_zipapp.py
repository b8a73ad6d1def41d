"""The zipapp: built by scripts/zipapp.sh, it serves from an empty directory and answers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from trio_llm.store.progress import drain
from trio_llm.store.store import Store

pytestmark = pytest.mark.full  # builds the zipapp with shiv

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_zipapp_serves_from_an_empty_directory(tmp_path: Path, smollm2_path: Path) -> None:
    pyz = tmp_path / "trio-llm.pyz"
    env = {**os.environ, "TRIO_LLM_VENV": str(Path(sys.executable).parent.parent)}
    subprocess.run(["bash", str(ROOT / "scripts" / "zipapp.sh"), str(pyz)], env=env, check=True,
                   capture_output=True)
    models = tmp_path / "models"
    drain(Store(models).pull("smollm2:135m", source=smollm2_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    port = free_port()
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL"))}
    run_env.update(OLLAMA_MODELS=str(models), OLLAMA_HOST=f"127.0.0.1:{port}",
                   SHIV_ROOT=str(tmp_path / "shiv"))
    server = subprocess.Popen(["python3", str(pyz), "serve"], cwd=empty, env=run_env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=1).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "the zipapp server did not start"
                assert server.poll() is None, "the zipapp server exited"
                time.sleep(0.2)
        body = {"model": "smollm2:135m", "prompt": "The capital of France is", "raw": True,
                "stream": False, "options": {"temperature": 0, "num_predict": 3}}
        request = urllib.request.Request(f"{url}/api/generate", data=json.dumps(body).encode())
        reply = json.loads(urllib.request.urlopen(request, timeout=60).read())
        assert reply["done"] and "Paris" in reply["response"]
        assert list(empty.iterdir()) == []          # it wrote nothing where it was started
    finally:
        server.terminate()
        server.wait(timeout=10)
