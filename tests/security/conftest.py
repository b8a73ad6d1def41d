"""Fixtures for the hostile-input tests: the real server (store, scheduler, engine, HTTP on a
loopback port) over a private store holding smollm2:135m, and the two checks every test ends
with: the server still answers, and nothing was written outside the store."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from trio_llm.api.serve import serve
from trio_llm.config import Host
from trio_llm.nursery.settings import SchedulerSettings
from trio_llm.server import EngineBackend, open_backend
from trio_llm.store import Store, drain

MODEL = "smollm2:135m"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def pulled_store(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path) -> Path:
    root = tmp_path_factory.mktemp("secure-pulled") / "models"
    drain(Store(root).pull(MODEL, source=smollm2_path))
    return root


def world(sandbox: Path, store: Path) -> dict[str, int]:
    """Every file under `sandbox` outside `store`, and the repository's untracked files."""
    seen: dict[str, int] = {}
    for dirpath, _dirs, files in os.walk(sandbox):
        if Path(dirpath).is_relative_to(store):
            continue
        for name in files:
            path = Path(dirpath, name)
            seen[str(path)] = path.stat().st_size
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO,
                            capture_output=True, text=True, check=False).stdout
    for line in status.splitlines():
        seen["repo:" + line] = 0
    return seen


@dataclass
class Secured:
    """A live server over a private store, and what the closing checks compare against."""

    host: Host
    backend: EngineBackend
    store: Path
    sandbox: Path
    before: dict[str, int]

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        kwargs.setdefault("timeout", 120)
        return httpx.AsyncClient(base_url=self.host.url, trust_env=False, **kwargs)

    async def still_serving(self, generate: bool = True) -> None:
        """The server answers cheap routes, and (unless told not to) still generates."""
        async with self.client() as http:
            with trio.fail_after(60):
                assert (await http.get("/api/version")).status_code == 200
                tags = await http.get("/api/tags")
                assert tags.status_code == 200
                assert MODEL in [m["name"] for m in tags.json()["models"]]
                if generate:
                    reply = await http.post("/api/generate", json={
                        "model": MODEL, "prompt": "Hi", "stream": False,
                        "options": {"num_predict": 2, "temperature": 0}})
                    assert reply.status_code == 200, reply.text
                    assert reply.json()["done"] is True

    def nothing_written_outside_the_store(self) -> None:
        assert world(self.sandbox, self.store) == self.before


async def start_secured(nursery: trio.Nursery, sandbox: Path, pulled: Path,
                        **settings: Any) -> Secured:
    """Copy the pulled store (hard links: blobs are never modified in place) and serve it."""
    store = sandbox / "models"
    if not store.exists():
        shutil.copytree(pulled, store, copy_function=os.link)
    base: dict[str, Any] = {"context_length": 1024, "keep_alive": 300.0}
    scheduler_settings = SchedulerSettings(**{**base, **settings})

    async def run(task_status: trio.TaskStatus[tuple[Host, EngineBackend]]) -> None:
        async with open_backend(store, scheduler_settings) as backend:
            host = await nursery.start(partial(serve, backend, "127.0.0.1:0"))
            task_status.started((host, backend))
            await trio.sleep_forever()

    host, backend = await nursery.start(run)
    return Secured(host, backend, store, sandbox, world(sandbox, store))


@pytest.fixture
async def secured(nursery: trio.Nursery, tmp_path: Path, pulled_store: Path
                  ) -> AsyncIterator[Secured]:
    yield await start_secured(nursery, tmp_path, pulled_store)


async def upload_blob(http: httpx.AsyncClient, data: bytes) -> str:
    import hashlib
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    reply = await http.post(f"/api/blobs/{digest}", content=bytes(data))
    assert reply.status_code in (200, 201), reply.text
    return digest
