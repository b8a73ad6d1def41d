"""Fixtures for the API tests: a live server on a free port over a swappable backend.

Only the `backend` and `model` fixtures name the fake; point them at the real store and
scheduler (and a real model name) and the route tests run unchanged. Tests that steer the
fake (pausing a generation, injecting failures) ask for `fake`, which skips otherwise.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

import httpx
import pytest
import trio

from trio_llm.api import serve
from trio_llm.api.backend import Backend
from trio_llm.config import Host
from trio_llm.testing.fake_backend import FakeBackend


@pytest.fixture
def backend() -> Backend:
    return FakeBackend()


@pytest.fixture
def model() -> str:
    """A model that exists in `backend`, as a client would name it."""
    return "fake"


@pytest.fixture
def fake(backend: Backend) -> FakeBackend:
    if not isinstance(backend, FakeBackend):
        pytest.skip("needs the fake backend's controls")
    return backend


@pytest.fixture
async def server(nursery: trio.Nursery, backend: Backend) -> Host:
    """The API served on 127.0.0.1 at a free port; stopped when the test ends."""
    return await nursery.start(partial(serve, backend, "127.0.0.1:0", keep_alive_timeout=2.0,
                                       origins=["https://allowed.example", "chrome-extension://*"]))


def local_client(host: Host) -> httpx.AsyncClient:
    """An HTTP client for the local server (plain http: no CA bundle to load, which costs
    more than a whole test here)."""
    return httpx.AsyncClient(base_url=host.url, timeout=10, verify=False)


@pytest.fixture
async def client(server: Host) -> AsyncIterator[httpx.AsyncClient]:
    async with local_client(server) as http:
        yield http


async def raw_request(host: Host, data: bytes, *, timeout: float = 5.0) -> tuple[bytes, float]:
    """Send raw bytes, read until the server closes; the reply and the seconds until EOF."""
    stream = await trio.open_tcp_stream(host.host, host.port)
    reply = b""
    began = trio.current_time()
    async with stream:
        await stream.send_all(data)
        with trio.fail_after(timeout):
            while chunk := await stream.receive_some():
                reply += chunk
    return reply, trio.current_time() - began
