"""End-to-end fixtures: a real store holding smollm2:135m, the real scheduler and engine, and
the HTTP server on a free loopback port."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from trio_llm.api.serve import serve
from trio_llm.config import Host
from trio_llm.nursery.settings import SchedulerSettings
from trio_llm.server import EngineBackend, open_backend
from trio_llm.store.progress import drain
from trio_llm.store.store import Store

MODEL = "smollm2:135m"


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path) -> Path:
    """A store with the catalog's smollm2:135m imported (from the cached GGUF, no download)."""
    root = tmp_path_factory.mktemp("models")
    drain(Store(root).pull(MODEL, source=smollm2_path))
    return root


def settings(**overrides: object) -> SchedulerSettings:
    base = {"context_length": 2048, "keep_alive": 300.0}
    return SchedulerSettings(**{**base, **overrides})  # type: ignore[arg-type]


async def start(nursery: trio.Nursery, models_dir: Path, **overrides: object
                ) -> tuple[Host, EngineBackend]:
    """Open the real backend and serve it; both stop when the test's nursery ends."""

    async def run(task_status: trio.TaskStatus[tuple[Host, EngineBackend]]) -> None:
        async with open_backend(models_dir, settings(**overrides)) as backend:
            host = await nursery.start(partial(serve, backend, "127.0.0.1:0"))
            task_status.started((host, backend))
            await trio.sleep_forever()

    return await nursery.start(run)


@pytest.fixture
async def live(nursery: trio.Nursery, models_dir: Path) -> tuple[Host, EngineBackend]:
    return await start(nursery, models_dir)


@pytest.fixture
async def client(live: tuple[Host, EngineBackend]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live[0].url, timeout=60, verify=False) as http:
        yield http


async def cli(host: Host, *args: str, stdin: bytes = b"", cwd: Path | None = None
              ) -> tuple[int, str]:
    """Run `python -m trio_llm.cli ARGS` against `host`; its exit code and its output."""
    repo = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "OLLAMA_HOST": host.bind, "PYTHONPATH": path}
    done = await trio.run_process([sys.executable, "-m", "trio_llm.cli", *args], env=env,
                                  stdin=stdin, capture_stdout=True, capture_stderr=True,
                                  check=False, cwd=cwd)
    return done.returncode, (done.stdout + done.stderr).decode()
