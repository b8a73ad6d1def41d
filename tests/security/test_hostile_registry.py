"""Defect class 4 (and the redirect and EMFILE parts of 8): a registry must not stall the server.

Pulls had only a per-read timeout, ran blocking urllib in worker threads and went on after
their client left: 42 pulls from a registry sending a byte every few seconds exhausted trio's
threads and froze /api/tags and generate. A manifest of ~20,000 layers kept one open file per
layer (EMFILE for the whole server, the store path in the error), and redirects to ftp:// were
followed. Each hostile registry below now ends its pull with a clear error (or a clean
success), within its deadline, while the server keeps answering; a client that leaves cancels
its pull; no temporary is left and nothing lands outside the store."""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.security.conftest import MODEL, Secured, start_secured
from tests.security.hostile_registry import HostileRegistry

pytestmark = pytest.mark.full  # waits out registry deadlines

SLOW_PULLS = 42


async def pull_lines(secured: Secured, name: str) -> list[dict[str, Any]]:
    async with secured.client() as http:
        reply = await http.post("/api/pull", json={"model": name, "insecure": True})
        assert reply.status_code in (200, 500), reply.text
        return [json.loads(line) for line in reply.text.splitlines() if line.strip()]


def temporaries(secured: Secured) -> list[str]:
    return [p.name for p in (secured.store / "blobs").iterdir() if p.name.startswith(".tmp")]


async def test_slow_registries_never_stall_the_server_and_leaving_cancels_the_pull(
        nursery: trio.Nursery, tmp_path: Path, pulled_store: Path) -> None:
    registry = HostileRegistry(interval=1.0)
    port = await nursery.start(registry.serve)
    secured = await start_secured(nursery, tmp_path, pulled_store)

    async def slow_pull(i: int) -> None:
        async with secured.client() as http:
            async with http.stream("POST", "/api/pull", json={
                    "model": f"127.0.0.1:{port}/slow/m{i}", "insecure": True}) as reply:
                async for _ in reply.aiter_lines():
                    pass

    with trio.fail_after(120):
        async with trio.open_nursery() as pulls:
            for i in range(SLOW_PULLS):
                pulls.start_soon(slow_pull, i)
            while registry.open_blob_connections < SLOW_PULLS:
                await trio.sleep(0.05)
            for _ in range(3):          # every pull is stuck in a slow read: the server answers
                with trio.fail_after(20):
                    await secured.still_serving()
            pulls.cancel_scope.cancel()  # the clients leave
        while registry.open_blob_connections:
            await trio.sleep(0.05)      # ...and their pulls stop reading at once
        while temporaries(secured):
            await trio.sleep(0.05)
    await secured.still_serving()
    secured.nothing_written_outside_the_store()


CASES: list[tuple[str, str, dict[str, str], str]] = [
    ("a registry that goes silent", "silent", {"TRIO_LLM_REGISTRY_IDLE_TIMEOUT": "1s"},
     "sent nothing for 1 s"),
    ("a trickle that never ends", "slow", {"TRIO_LLM_REGISTRY_TIMEOUT": "2s"},
     "did not finish within 2 s"),
    ("a redirect to ftp", "ftp", {}, "not http or https"),
    ("a manifest of 20,000 layers", "layers20000", {}, "at most 1024"),
    ("a manifest of 600 layers", "layers600", {}, ""),
]


async def test_hostile_registries_end_their_pulls_cleanly(
        nursery: trio.Nursery, tmp_path: Path, pulled_store: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    registry = HostileRegistry(interval=0.2)
    port = await nursery.start(registry.serve)
    secured = await start_secured(nursery, tmp_path, pulled_store)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for case, namespace, env, error in CASES:
        with monkeypatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            # 600 layers, one file open for each, would need more than this limit allows
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 400), hard))
            baseline = len(list(Path("/proc/self/fd").iterdir()))
            registry.max_fds = 0
            try:
                with trio.fail_after(60):
                    lines = await pull_lines(secured, f"127.0.0.1:{port}/{namespace}/m")
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        last = lines[-1]
        if error:
            assert error in last.get("error", ""), (case, last)
        else:
            assert last == {"status": "success"}, (case, last)
            assert registry.max_fds - baseline < 40, (case, registry.max_fds - baseline)
        assert all(str(secured.sandbox) not in json.dumps(line) for line in lines), lines
        assert temporaries(secured) == [], case
        await secured.still_serving(generate=False)
    await secured.still_serving()
    secured.nothing_written_outside_the_store()


async def test_a_push_to_a_registry_that_stops_answering_fails_at_its_idle_deadline(
        nursery: trio.Nursery, tmp_path: Path, pulled_store: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    registry = HostileRegistry()
    port = await nursery.start(registry.serve)
    secured = await start_secured(nursery, tmp_path, pulled_store)
    name = f"127.0.0.1:{port}/silentpush/m:latest"
    monkeypatch.setenv("TRIO_LLM_REGISTRY_IDLE_TIMEOUT", "1s")
    async with secured.client() as http:
        assert (await http.post("/api/copy", json={"source": MODEL, "destination": name})
                ).status_code == 200
        with trio.fail_after(60):
            reply = await http.post("/api/push", json={"model": name, "insecure": True})
        last = [json.loads(line) for line in reply.text.splitlines() if line.strip()][-1]
        assert "sent nothing for 1 s" in last.get("error", ""), last
        with trio.fail_after(10):
            while registry.open_blob_connections:
                await trio.sleep(0.05)
        deleted = await http.request("DELETE", "/api/delete", json={"model": name})
        assert deleted.status_code == 200
    await secured.still_serving()
    secured.nothing_written_outside_the_store()
