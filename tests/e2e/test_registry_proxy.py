"""Pull and push through a real proxy (Debian's tinyproxy on loopback), as the seed FAQ's "use
Ollama with a proxy server" expects: HTTPS_PROXY carries the traffic to an HTTPS registry
(CONNECT), HTTP_PROXY to a plain one, and NO_PROXY bypasses the proxy. The proxy's own log
says which requests went through it."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

from tests.e2e.conftest import MODEL, start
from tests.e2e.test_registry import events, free_port, running_registry
from trio_llm.config import Host
from trio_llm.server import EngineBackend

pytestmark = pytest.mark.full  # runs tinyproxy and real registries

TINYPROXY = "/usr/bin/tinyproxy"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl), and its key."""
    root = tmp_path_factory.mktemp("tls")
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory,
                 certificate: tuple[Path, Path]) -> Iterator[str]:
    with running_registry(tmp_path_factory.mktemp("tls-registry"), certificate) as host:
        yield host


@pytest.fixture(scope="module")
def plain_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_registry(tmp_path_factory.mktemp("plain-registry")) as host:
        yield host


class Proxy:
    """A tinyproxy process and its log."""

    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log

    def lines(self, needle: str) -> int:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return sum(needle in line for line in text.splitlines())


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    if not os.access(TINYPROXY, os.X_OK):
        pytest.fail(f"{TINYPROXY} is missing: apt-get install -y tinyproxy")
    root = tmp_path_factory.mktemp("tinyproxy")
    port = free_port()
    log = root / "tinyproxy.log"
    conf = root / "tinyproxy.conf"
    conf.write_text(f'Port {port}\nListen 127.0.0.1\nTimeout 600\nLogFile "{log}"\n'
                    "LogLevel Connect\nMaxClients 100\nAllow 127.0.0.1\nDisableViaHeader Yes\n")
    proc = subprocess.Popen([TINYPROXY, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("tinyproxy did not start: "
                                f"{log.read_text() if log.exists() else ''}")
                time.sleep(0.05)
        yield Proxy(f"http://127.0.0.1:{port}", log)
    finally:
        proc.terminate()
        proc.wait(10)


def unproxied(server: Host) -> httpx.AsyncClient:
    """The test's own client: it talks to trio-llm directly, whatever the environment says."""
    return httpx.AsyncClient(base_url=server.url, timeout=120, trust_env=False)


async def call(server: Host, route: str, body: dict[str, object]) -> list[dict[str, object]]:
    async with unproxied(server) as http:
        reply = await http.post(route, json=body)
    assert reply.status_code == 200, reply.text
    return events(reply)


async def test_https_push_and_pull_go_through_https_proxy_and_no_proxy_bypasses_it(
        nursery: trio.Nursery, live: tuple[Host, EngineBackend], tls_registry: str,
        proxy: Proxy, certificate: tuple[Path, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    server, backend = live
    name = f"{tls_registry}/library/smol:proxied"
    await trio.to_thread.run_sync(backend.store.copy, MODEL, name)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    tunnel = f"CONNECT {tls_registry}"
    try:
        assert (await call(server, "/api/push", {"model": name}))[-1] == {"status": "success"}
        pushed = proxy.lines(tunnel)
        assert pushed > 0, "the push went around the proxy"

        other, _ = await start(nursery, tmp_path / "via-proxy")
        assert (await call(other, "/api/pull", {"model": name}))[-1] == {"status": "success"}
        pulled = proxy.lines(tunnel)
        assert pulled > pushed, "the pull went around the proxy"

        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        third, third_backend = await start(nursery, tmp_path / "direct")
        assert (await call(third, "/api/pull", {"model": name}))[-1] == {"status": "success"}
        assert proxy.lines(tunnel) == pulled, "NO_PROXY should have bypassed the proxy"
        assert [e.name.display for e in third_backend.store.list()] == [name]
    finally:
        await backend.delete(name)


async def test_plain_http_pull_goes_through_http_proxy(
        nursery: trio.Nursery, live: tuple[Host, EngineBackend], plain_registry: str,
        proxy: Proxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server, backend = live
    name = f"{plain_registry}/library/smol:plain"
    await trio.to_thread.run_sync(backend.store.copy, MODEL, name)
    try:
        assert (await call(server, "/api/push", {"model": name, "insecure": True}))[-1] == {
            "status": "success"}
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        other, _ = await start(nursery, tmp_path / "via-proxy")
        before = proxy.lines(f"http://{plain_registry}/v2/")
        assert (await call(other, "/api/pull", {"model": name, "insecure": True}))[-1] == {
            "status": "success"}
        assert proxy.lines(f"http://{plain_registry}/v2/") > before
    finally:
        await backend.delete(name)
