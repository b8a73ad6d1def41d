"""Push and pull against a real Docker registry (Debian's `docker-registry`, distribution 2.8)
on a loopback port: push uploads every blob and the manifest byte for byte, a second push
uploads nothing, a pull into an empty store gives identical blobs and the same greedy answer,
missing tags and absent registries fail clearly, and an interrupted pull leaves no blob."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.e2e.conftest import MODEL, cli, start
from trio_llm import registry
from trio_llm.config import Host
from trio_llm.server import EngineBackend
from trio_llm.store.atomic import TEMP_PREFIX
from trio_llm.store.errors import ModelNotFound
from trio_llm.store.manifests import MANIFEST_V2
from trio_llm.store.manifests import MODEL as MODEL_LAYER
from trio_llm.store.names import parse_name
from trio_llm.store.store import Store

pytestmark = pytest.mark.full  # runs a real Docker registry

REGISTRY_BIN = "/usr/bin/docker-registry"
GREEDY = {"temperature": 0, "num_predict": 12, "seed": 1}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_registry(root: Path, tls: tuple[Path, Path] | None = None) -> Iterator[str]:
    """A real registry serving from `root` (plain HTTP, or HTTPS with `tls` = (cert, key));
    its `host:port`. Fails (never skips) when it cannot start: scripts/test.sh installs it."""
    if not os.access(REGISTRY_BIN, os.X_OK):
        pytest.fail(f"{REGISTRY_BIN} is missing: apt-get install -y docker-registry")
    host = f"127.0.0.1:{free_port()}"
    config = root / "config.yml"
    tls_config = f"  tls:\n    certificate: {tls[0]}\n    key: {tls[1]}\n" if tls else ""
    config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                      f"    rootdirectory: {root / 'data'}\nhttp:\n  addr: {host}\n"
                      f"  secret: trio-llm-tests\n{tls_config}")
    with open(root / "log.txt", "wb") as log:
        proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            _wait_until_ready(proc, host, root / "log.txt", tls[0] if tls else None)
            yield host
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def registry_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real plain-HTTP registry serving from a temporary folder; its `host:port`."""
    with running_registry(tmp_path_factory.mktemp("registry")) as host:
        yield host


def _wait_until_ready(proc: subprocess.Popen[bytes], host: str, log: Path,
                      cafile: Path | None) -> None:
    url = f"{'https' if cafile else 'http'}://{host}/v2/"
    context = ssl.create_default_context(cafile=str(cafile)) if cafile else None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=context))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"docker-registry exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            with opener.open(url, timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"docker-registry did not answer {url} within 15 s: {log.read_text()[-2000:]}")


@pytest.fixture
async def scratch(live: tuple[Host, EngineBackend]) -> AsyncIterator[list[str]]:
    """Names a test adds to the shared live store; removed when it ends, passed or failed."""
    names: list[str] = []
    yield names
    for name in names:
        with contextlib.suppress(ModelNotFound):
            await live[1].delete(name)


def events(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines()]


async def push_over_http(server: Host, name: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
        reply = await http.post("/api/push", json={"model": name, "insecure": True})
    assert reply.status_code == 200, reply.text
    return events(reply)


async def copied_and_pushed(live: tuple[Host, EngineBackend], name: str, scratch: list[str]
                            ) -> None:
    """`name` in the live store (a copy of smollm2:135m) and in the registry."""
    scratch.append(name)
    await trio.to_thread.run_sync(live[1].store.copy, MODEL, name)
    assert (await push_over_http(live[0], name))[-1] == {"status": "success"}


async def test_push_uploads_every_blob_and_the_manifest_byte_for_byte(
        live: tuple[Host, EngineBackend], registry_host: str, scratch: list[str]) -> None:
    server, backend = live
    name = f"{registry_host}/library/smol:v1"
    scratch.append(name)
    assert (await cli(server, "cp", MODEL, name))[0] == 0
    code, out = await cli(server, "push", name, "--insecure")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "retrieving manifest" and lines[-2:] == ["pushing manifest", "success"]
    stored = backend.store.manifests.read(parse_name(name))
    model_digest = stored.manifest.layers_of(MODEL_LAYER)[0].digest
    assert any(line.startswith(f"pushing {model_digest[7:19]}") and line.endswith(" 100%")
               for line in lines)

    async with httpx.AsyncClient(base_url=f"http://{registry_host}/v2/library/smol") as reg:
        assert (await reg.get("/tags/list")).json() == {"name": "library/smol", "tags": ["v1"]}
        manifest = await reg.get("/manifests/v1", headers={"Accept": MANIFEST_V2})
        assert manifest.content == stored.raw
        assert manifest.headers["Docker-Content-Digest"] == "sha256:" + stored.digest
        for layer in (*stored.manifest.layers, stored.manifest.config):
            head = await reg.head(f"/blobs/{layer.digest}")
            assert head.status_code == 200
            assert int(head.headers["Content-Length"]) == layer.size

    again = await push_over_http(server, name)
    transfers = [e for e in again if "digest" in e]
    assert sorted(e["digest"] for e in transfers) == sorted(stored.manifest.digests)
    assert all(e["status"] == f"pushing {e['digest'][7:19]}" and e["completed"] == e["total"]
               for e in transfers), "a blob the registry holds is reported present, not sent"


async def test_pull_into_an_empty_store_gives_identical_blobs_and_the_same_answer(
        nursery: trio.Nursery, live: tuple[Host, EngineBackend], registry_host: str,
        tmp_path: Path, scratch: list[str]) -> None:
    name = f"{registry_host}/library/smol:v2"
    await copied_and_pushed(live, name, scratch)
    other, other_backend = await start(nursery, tmp_path / "empty")
    async with httpx.AsyncClient(base_url=other.url, timeout=120) as http:
        reply = await http.post("/api/pull", json={"model": name, "insecure": True})
        assert reply.status_code == 200
        statuses = [e.get("status") for e in events(reply)]
        assert statuses[0] == "pulling manifest" and statuses[-3:] == [
            "verifying sha256 digest", "writing manifest", "success"]
        tags = (await http.get("/api/tags")).json()["models"]
        assert [m["name"] for m in tags] == [name]
        answer = await http.post("/api/generate", json={"model": name, "prompt": "Say hi.",
                                                        "stream": False, "options": GREEDY})
    source = live[1].store.manifests.read(parse_name(name))
    pulled = other_backend.store.manifests.read(parse_name(name))
    assert pulled.raw == source.raw
    for digest in source.manifest.digests:
        assert (other_backend.store.blob_path(digest).read_bytes()
                == live[1].store.blob_path(digest).read_bytes())
    async with httpx.AsyncClient(base_url=live[0].url, timeout=120) as http:
        expected = await http.post("/api/generate", json={
            "model": name, "prompt": "Say hi.", "stream": False, "options": GREEDY})
    assert answer.status_code == 200 and answer.json()["response"].strip()
    assert answer.json()["response"] == expected.json()["response"]


async def test_missing_tags_unknown_models_and_absent_registries_fail_clearly(
        live: tuple[Host, EngineBackend], registry_host: str) -> None:
    server = live[0]
    code, out = await cli(server, "pull", f"{registry_host}/library/smol:absent", "--insecure")
    assert code == 1 and "Error: pull model manifest: file does not exist" in out
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        reply = await http.post("/api/pull", json={"model": f"{registry_host}/library/nobody",
                                                   "insecure": True})
        assert events(reply) == [{"status": "pulling manifest"},
                                 {"error": "pull model manifest: file does not exist"}]
        reply = await http.post("/api/pull", json={"model": f"http://{registry_host}/a/b"})
        assert reply.status_code == 400 and reply.json() == {"error": "insecure protocol http"}
        reply = await http.post("/api/push", json={"model": f"{registry_host}/library/none:1",
                                                   "insecure": True})
        assert reply.status_code == 404 and "not found" in reply.json()["error"]
        nobody = f"127.0.0.1:{free_port()}"
        reply = await http.post("/api/pull", json={"model": f"{nobody}/library/smol",
                                                   "insecure": True, "stream": False})
        assert reply.status_code == 500
        assert reply.json()["error"] == ("pull model manifest: connection refused by registry "
                                         f"http://{nobody}: is a registry listening there?")


async def test_a_pull_interrupted_mid_blob_leaves_no_blob_and_no_temporary(
        models_dir: Path, registry_host: str, tmp_path: Path) -> None:
    name = f"{registry_host}/library/smol:v3"
    source = Store(models_dir, prune=False)
    source.copy(MODEL, name)
    try:
        async for _ in registry.push(source, name, insecure=True):
            pass
        model_digest = source.get(name).model_digest
    finally:
        source.delete(name)

    target = Store(tmp_path / "target")
    pulling = registry.pull_from_registry(target, name, insecure=True)
    async for report in pulling:
        if report.get("digest") == model_digest and 0 < report["completed"] < report["total"]:
            break
    else:
        pytest.fail("the pull never reported a blob half way")
    blobs = target.blobs.directory
    assert [p.name for p in blobs.iterdir() if p.name.startswith(TEMP_PREFIX)], \
        "the download should be under way in a temporary"
    assert not target.has_blob(model_digest)
    await pulling.aclose()   # what a client disconnect does to the generator
    assert [p.name for p in blobs.iterdir() if p.name.startswith(TEMP_PREFIX)] == []
    assert not target.has_blob(model_digest)
    assert target.list() == []
