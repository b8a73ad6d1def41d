"""Load: 1,000 requests from 50 concurrent clients against `trio-llm serve` (a real process, the
real model) with OLLAMA_NUM_PARALLEL=2 and OLLAMA_MAX_QUEUE=8. Every answer is a 200 or a 503
with Retry-After, none hangs, the server's resident memory after the run is within 5 % of what
it was after a warm-up, and /metrics shows the queue empty again."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

from tests.e2e.test_registry import free_port
from tests.security.conftest import MODEL, REPO

pytestmark = pytest.mark.full  # 1,000 requests against a server process

CLIENTS = 50
PER_CLIENT = 20
WARM_UP_PER_CLIENT = 6


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def server_process(tmp_path: Path, pulled_store: Path) -> Iterator[tuple[str, int]]:
    store = tmp_path / "models"
    shutil.copytree(pulled_store, store, copy_function=os.link)
    port = free_port()
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": str(store),
           "OLLAMA_NUM_PARALLEL": "2", "OLLAMA_MAX_QUEUE": "8", "OLLAMA_KEEP_ALIVE": "-1",
           "OLLAMA_CONTEXT_LENGTH": "512", "PYTHONPATH": str(REPO),
           # the prompt cache grows to its budget by design: one the warm-up fills, so that
           # RSS growth after it is a leak, not the cache filling up
           "TRIO_LLM_PROMPT_CACHE": "8MiB"}
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "trio_llm.cli", "serve"], env=env,
                                stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            yield f"http://127.0.0.1:{port}", proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def wait_until_up(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, trust_env=False) as http:
        with trio.fail_after(60):
            while True:
                try:
                    if (await http.get("/api/version")).status_code == 200:
                        return
                except httpx.TransportError:
                    await trio.sleep(0.1)


async def hammer(url: str, per_client: int, statuses: Counter[str], seed: int) -> None:
    """`CLIENTS` clients, each sending `per_client` generations one after another."""
    rng = random.Random(seed)

    async def client(index: int) -> None:
        async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=120) as http:
            for n in range(per_client):
                body = {"model": MODEL, "prompt": f"Client {index} says {n}.",
                        "stream": rng.random() < 0.5,
                        "options": {"num_predict": rng.randint(1, 4), "temperature": 0}}
                reply = await http.post("/api/generate", json=body)
                if reply.status_code == 503:
                    assert reply.headers.get("retry-after") == "1", reply.headers
                    statuses["503"] += 1
                else:
                    assert reply.status_code == 200, reply.text
                    last = [line for line in reply.text.splitlines() if line.strip()][-1]
                    assert '"done":true' in last and '"error"' not in last, last
                    statuses["200"] += 1

    async with trio.open_nursery() as nursery:
        for index in range(CLIENTS):
            nursery.start_soon(client, index)


async def test_a_thousand_requests_from_fifty_clients(server_process: tuple[str, int]) -> None:
    url, pid = server_process
    await wait_until_up(url)
    warm: Counter[str] = Counter()
    with trio.fail_after(300):
        await hammer(url, WARM_UP_PER_CLIENT, warm, seed=1)
    await trio.sleep(1)
    after_warm_up = rss_bytes(pid)

    statuses: Counter[str] = Counter()
    with trio.fail_after(600):
        await hammer(url, PER_CLIENT, statuses, seed=2)
    assert sum(statuses.values()) == CLIENTS * PER_CLIENT
    assert set(statuses) <= {"200", "503"} and statuses["200"] > 0, statuses
    await trio.sleep(1)
    after_run = rss_bytes(pid)
    print(f"load: {dict(statuses)}; RSS {after_warm_up / 2**20:.1f} MiB after warm-up, "
          f"{after_run / 2**20:.1f} MiB after the run")
    assert abs(after_run - after_warm_up) <= 0.05 * after_warm_up, (
        f"RSS {after_warm_up >> 20} MiB after warm-up, {after_run >> 20} MiB after the run")
    async with httpx.AsyncClient(base_url=url, trust_env=False) as http:
        metrics = (await http.get("/metrics")).text
        health = (await http.get("/health")).json()
    assert "\ntrio_llm_queue_depth 0\n" in metrics
    assert health["queue_depth"] == 0 and health["busy_slots"] == 0
    assert health["loaded_models"] == [MODEL]
