"""Serving: binding, connection closing, streaming as it happens, disconnects, signals, CORS."""

from __future__ import annotations

import json
import os
import signal
import socket
from functools import partial

import httpx
import pytest
import trio

from tests.api.conftest import local_client, raw_request
from trio_llm.api import serve
from trio_llm.config import Host
from trio_llm.testing.fake_backend import FakeBackend

GENERATE = json.dumps({"model": "fake", "prompt": "a b c d e f"}).encode()


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


async def read_line(stream: trio.SocketStream, buffer: bytearray) -> bytes:
    while b"\n" not in buffer:
        chunk = await stream.receive_some()
        if not chunk:
            raise EOFError
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line


async def test_serve_reports_the_bound_address(server: Host) -> None:
    assert server.host == "127.0.0.1" and server.port > 0
    async with local_client(server) as http:
        assert (await http.get("/")).text == "trio-llm is running"


async def test_serve_binds_ollama_host_from_the_environment(
        nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:0")
    host = await nursery.start(serve, FakeBackend())
    assert host.host == "127.0.0.1" and host.port > 0


async def test_serve_binds_ipv6_loopback(nursery: trio.Nursery) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        host = await nursery.start(serve, FakeBackend(), "[::1]:0")
    except OSError:
        pytest.skip("IPv6 loopback unavailable")
    assert host.host == "::1"
    async with local_client(host) as http:
        assert (await http.get("/api/version")).status_code == 200


async def test_startup_logs_address_and_configuration(
        nursery: trio.Nursery, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="trio_llm.server")
    host = await nursery.start(serve, FakeBackend(), "127.0.0.1:0")
    assert f"Listening on {host.bind}" in caplog.text
    assert "OLLAMA_MAX_QUEUE=512" in caplog.text


async def test_connection_close_gets_eof_promptly(server: Host) -> None:
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    reply, seconds = await raw_request(server, request)
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"trio-llm is running")
    assert seconds < 0.5


async def test_http_1_0_gets_eof_promptly(server: Host) -> None:
    reply, seconds = await raw_request(server, b"GET /api/version HTTP/1.0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.0 200") or reply.startswith(b"HTTP/1.1 200")
    assert seconds < 0.5


async def test_streamed_answer_with_connection_close_gets_eof_promptly(server: Host) -> None:
    reply, seconds = await raw_request(server, post("/api/generate", GENERATE,
                                                    "Connection: close\r\n"))
    assert b'"done":true' in reply
    assert seconds < 0.5


async def test_idle_keep_alive_connection_closes_at_keep_alive_timeout(
        nursery: trio.Nursery) -> None:
    host = await nursery.start(partial(serve, FakeBackend(), "127.0.0.1:0",
                                       keep_alive_timeout=0.3))
    reply, seconds = await raw_request(host, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200")
    assert 0.25 < seconds < 1.5


async def test_keep_alive_connection_serves_several_requests(server: Host) -> None:
    stream = await trio.open_tcp_stream(server.host, server.port)
    async with stream:
        for _ in range(3):
            await stream.send_all(b"GET /api/version HTTP/1.1\r\nHost: localhost\r\n\r\n")
            reply = b""
            while not reply.endswith(b"}"):
                reply += await stream.receive_some()
            assert reply.startswith(b"HTTP/1.1 200")


async def test_stream_arrives_line_by_line_as_tokens_are_made(server: Host,
                                                              fake: FakeBackend) -> None:
    fake.pause_at = 3
    stream = await trio.open_tcp_stream(server.host, server.port)
    async with stream:
        await stream.send_all(post("/api/generate", GENERATE))
        buffer = bytearray()
        with trio.fail_after(5):
            while not buffer.startswith(b"HTTP/1.1 200") or b"\r\n\r\n" not in buffer:
                buffer += await stream.receive_some()
            head, _, body = bytes(buffer).partition(b"\r\n\r\n")
            assert b"transfer-encoding: chunked" in head.lower()
            assert b"application/x-ndjson" in head
            buffer[:] = body
            await fake.paused.wait()
            seen = b""
            while seen.count(b'"done":false') < 3:  # three tokens out, the fourth held back
                seen += await stream.receive_some()
            assert b'"done":true' not in seen
            assert fake.outcomes == []
            fake.resume.set()
            while b'"done":true' not in seen:
                seen += await stream.receive_some()
    assert fake.outcomes == ["finished"]


async def test_client_disconnect_cancels_the_generation_at_once(server: Host,
                                                                fake: FakeBackend) -> None:
    fake.pause_at = 2
    stream = await trio.open_tcp_stream(server.host, server.port)
    await stream.send_all(post("/api/generate", GENERATE))
    with trio.fail_after(5):
        await fake.paused.wait()
    assert fake.active == 1
    await stream.aclose()
    with trio.fail_after(1):
        while not fake.outcomes:
            await trio.sleep(0.005)
    assert fake.outcomes == ["closed"]
    assert fake.active == 0 and fake.slots.value == 4
    async with local_client(server) as http:
        fake.pause_at = None
        again = await http.post("/api/generate", json={"model": "fake", "prompt": "x",
                                                       "stream": False})
        assert again.status_code == 200


async def test_disconnect_while_waiting_for_a_whole_answer_cancels_too(
        server: Host, fake: FakeBackend) -> None:
    fake.pause_at = 2
    body = json.dumps({"model": "fake", "prompt": "a b c", "stream": False}).encode()
    stream = await trio.open_tcp_stream(server.host, server.port)
    await stream.send_all(post("/api/generate", body))
    with trio.fail_after(5):
        await fake.paused.wait()
    await stream.aclose()
    with trio.fail_after(1):
        while not fake.outcomes:
            await trio.sleep(0.005)
    assert fake.outcomes == ["closed"]


async def test_disconnect_during_sse_stream_cancels_too(server: Host, fake: FakeBackend) -> None:
    fake.pause_at = 2
    body = json.dumps({"model": "fake", "stream": True,
                       "messages": [{"role": "user", "content": "a b c"}]}).encode()
    stream = await trio.open_tcp_stream(server.host, server.port)
    await stream.send_all(post("/v1/chat/completions", body))
    with trio.fail_after(5):
        await fake.paused.wait()
    await stream.aclose()
    with trio.fail_after(1):
        while not fake.outcomes:
            await trio.sleep(0.005)
    assert fake.outcomes == ["closed"]


async def test_sigterm_drains_in_flight_streams_then_stops() -> None:
    fake = FakeBackend()
    fake.pause_at = 2
    async with trio.open_nursery() as nursery:
        host = await nursery.start(serve, fake, "127.0.0.1:0")
        stream = await trio.open_tcp_stream(host.host, host.port)
        await stream.send_all(post("/api/generate", GENERATE))
        with trio.fail_after(5):
            await fake.paused.wait()
        os.kill(os.getpid(), signal.SIGTERM)
        await trio.sleep(0.1)
        with pytest.raises(OSError):  # no longer accepting connections
            await trio.open_tcp_stream(host.host, host.port)
        fake.resume.set()
        reply = b""
        async with stream:
            with trio.fail_after(3):
                while chunk := await stream.receive_some():
                    reply += chunk
        assert b'"done":true' in reply
    assert fake.outcomes == ["finished"]


# ----------------------------------------------------------------------------- CORS

@pytest.mark.parametrize("origin", [
    "http://localhost", "http://localhost:3000", "https://127.0.0.1:8080", "http://0.0.0.0:1",
    "app://obsidian.md", "file://", "tauri://localhost", "vscode-webview://abc",
    "https://allowed.example", "chrome-extension://abcdef",
])
async def test_allowed_origins_get_cors_headers(client: httpx.AsyncClient, origin: str) -> None:
    response = await client.get("/api/version", headers={"Origin": origin})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == origin


@pytest.mark.parametrize("origin", ["https://evil.example", "http://localhost.evil.example",
                                    "https://allowed.example.evil"])
async def test_other_origins_are_refused(client: httpx.AsyncClient, origin: str) -> None:
    response = await client.post("/api/generate", json={"model": "fake", "prompt": "x"},
                                 headers={"Origin": origin})
    assert response.status_code == 403
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_preflight_is_answered_for_allowed_origins(client: httpx.AsyncClient) -> None:
    response = await client.options("/api/chat", headers={
        "Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, authorization, x-stainless-os"})
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert "content-type" in response.headers["Access-Control-Allow-Headers"]
    refused = await client.options("/api/chat", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert refused.status_code == 403


async def test_requests_without_origin_are_not_browser_requests(
        client: httpx.AsyncClient) -> None:
    response = await client.get("/api/version")
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers
