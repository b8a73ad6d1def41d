"""kill -9 at random points of a pull, a create with quantize and a push (10 runs each): the
store the next start opens is consistent, with no temporary file left, and every manifest's
blobs present with the right size and hash. Each operation runs in its own process, exactly
as the server runs it; the kill lands at a uniformly random moment of the operation itself
(timed from a first, uninterrupted run), after the interpreter has started."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_registry import running_registry
from tests.security.conftest import MODEL, REPO
from tests.security.models import tiny_llama_f32
from trio_llm import registry
from trio_llm.store import Store, drain

pytestmark = pytest.mark.full  # kill -9 at random points, 30 processes

RUNS = 10

PULL = """
import sys, trio
from trio_llm import registry
from trio_llm.store import Store
async def main():
    store = Store(sys.argv[1])
    print("STARTED", flush=True)
    async for _ in registry.pull_from_registry(store, sys.argv[2], insecure=True):
        pass
    print("DONE", flush=True)
trio.run(main)
"""
PUSH = PULL.replace("pull_from_registry", "push")
CREATE = """
import sys
from trio_llm.store import Store, drain
store = Store(sys.argv[1])
print("STARTED", flush=True)
drain(store.create({"model": "tiny:q4", "from": sys.argv[2], "quantize": "q4_K_M"}))
print("DONE", flush=True)
"""


def consistent(root: Path) -> list[str]:
    """Open the store as a restarted server does; every problem found (none is good)."""
    store = Store(root, prune=False)
    problems = [f"temporary left: {p.relative_to(root)}" for p in root.rglob(".tmp-*")]
    for entry in store.list():
        manifest = store.manifests.read(entry.name).manifest
        for layer in (*manifest.layers, manifest.config):
            if not store.has_blob(layer.digest):
                problems.append(f"{entry.name.display}: blob {layer.digest} missing")
            elif store.blobs.size(layer.digest) != layer.size:
                problems.append(f"{entry.name.display}: blob {layer.digest} has the wrong size")
    for digest in store.blobs.digests():
        if not store.blobs.verify(digest):
            problems.append(f"blob {digest} does not hash to its name")
    return problems


def run(script: str, root: Path, arg: str, kill_after: float | None) -> float:
    """Run `script`; kill -9 it `kill_after` seconds after it starts working (None: let it
    finish). The seconds it worked."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", script, str(root), arg], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "STARTED\n", proc.stderr.read() if proc.stderr else ""
        began = time.monotonic()
        if kill_after is None:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0 and "DONE" in out, err
            return time.monotonic() - began
        try:
            proc.wait(kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        return time.monotonic() - began
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def kill_points(duration: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(0, duration) for _ in range(RUNS)]


@pytest.fixture(scope="module")
def source_registry(tmp_path_factory: pytest.TempPathFactory, pulled_store: Path
                    ) -> Iterator[tuple[str, str]]:
    """A registry holding smollm2 (pushed once); its host and the pushed name."""
    with running_registry(tmp_path_factory.mktemp("kill-registry")) as host:
        root = tmp_path_factory.mktemp("kill-source") / "models"
        shutil.copytree(pulled_store, root, copy_function=os.link)
        store = Store(root, prune=False)
        name = f"{host}/library/smol:kill"
        store.copy(MODEL, name)

        async def push() -> None:
            async for _ in registry.push(store, name, insecure=True):
                pass

        import trio
        trio.run(push)
        yield host, name


def test_kill_9_during_pull(tmp_path: Path, source_registry: tuple[str, str]) -> None:
    _, name = source_registry
    duration = run(PULL, tmp_path / "first", name, None)
    assert consistent(tmp_path / "first") == []
    for i, at in enumerate(kill_points(duration, seed=9)):
        root = tmp_path / f"run{i}"
        run(PULL, root, name, at)
        assert consistent(root) == [], (i, at)
        run(PULL, root, name, None)             # and the pull can be done again
        assert consistent(root) == [] and [e.name.display for e in Store(root).list()] == [name]


def test_kill_9_during_create_with_quantize(tmp_path: Path) -> None:
    source = tiny_llama_f32(tmp_path / "tiny.gguf")
    digest = "sha256:" + hashlib.sha256(source.read_bytes()).hexdigest()
    base = tmp_path / "base"
    store = Store(base)
    with open(source, "rb") as f:
        drain(store.write_blob(f, digest))
    drain(store.create({"model": "tiny:f32", "files": {"tiny.gguf": digest}}))
    first = tmp_path / "first"
    shutil.copytree(base, first, copy_function=os.link)
    duration = run(CREATE, first, "tiny:f32", None)
    assert consistent(first) == []
    for i, at in enumerate(kill_points(duration, seed=16)):
        root = tmp_path / f"run{i}"
        shutil.copytree(base, root, copy_function=os.link)
        run(CREATE, root, "tiny:f32", at)
        assert consistent(root) == [], (i, at)
        names = {e.name.display for e in Store(root).list()}
        assert names in ({"tiny:f32"}, {"tiny:f32", "tiny:q4"}), names


def test_kill_9_during_push(tmp_path: Path, pulled_store: Path) -> None:
    root = tmp_path / "models"
    shutil.copytree(pulled_store, root, copy_function=os.link)
    points: list[float] = []
    for i in range(RUNS + 1):
        (tmp_path / f"registry{i}").mkdir()
        with running_registry(tmp_path / f"registry{i}") as host:   # empty: every blob goes
            name = f"{host}/library/smol:kill"
            Store(root, prune=False).copy(MODEL, name)
            if not points:
                points = kill_points(run(PUSH, root, name, None), seed=3)
                continue
            run(PUSH, root, name, points[i - 1])
            assert consistent(root) == [], (i, points[i - 1])
            run(PUSH, root, name, None)          # the registry takes the push again
            Store(root, prune=False).delete(name)
    assert consistent(root) == []
