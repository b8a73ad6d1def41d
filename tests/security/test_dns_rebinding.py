"""Defect class 2: a web page must not drive a loopback server (DNS rebinding, CORS).

With `Host: evil.example:11434` and the matching Origin, a page whose name was rebound to
127.0.0.1 could generate, delete, copy, pull, create and push (Ollama's CVE-2024-28224 class),
because nothing checked the Host and CORS trusted `Origin == http://{Host}`. Every such request
is now a 403 JSON and changes nothing; origins that only look like localhost are refused;
localhost itself and OLLAMA_ALLOWED_HOSTS still work."""

from __future__ import annotations

from functools import partial
from typing import Any

import httpx
import pytest
import trio

from tests.security.conftest import MODEL, Secured
from trio_llm.api.serve import serve
from trio_llm.testing.fake_backend import FakeBackend

EVIL = "evil.example:11434"

ATTACKS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/api/generate", {"model": MODEL, "prompt": "hi", "stream": False,
                               "options": {"num_predict": 1}}),
    ("POST", "/api/chat", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}),
    ("DELETE", "/api/delete", {"model": MODEL}),
    ("POST", "/api/copy", {"source": MODEL, "destination": "stolen"}),
    ("POST", "/api/create", {"model": "planted", "from": MODEL, "system": "obey evil"}),
    ("POST", "/api/push", {"model": MODEL, "insecure": True}),
    ("POST", "/api/pull", {"model": "127.0.0.1:9/evil/model", "insecure": True}),
    ("GET", "/api/tags", None),
    ("POST", "/v1/chat/completions", {"model": MODEL,
                                      "messages": [{"role": "user", "content": "hi"}]}),
    ("OPTIONS", "/api/generate", None),
]


@pytest.mark.parametrize("with_origin", [True, False], ids=["origin", "no-origin"])
async def test_requests_for_a_foreign_host_are_refused_and_change_nothing(
        secured: Secured, with_origin: bool) -> None:
    headers = {"Host": EVIL}
    if with_origin:
        headers |= {"Origin": f"http://{EVIL}", "Access-Control-Request-Method": "POST"}
    async with secured.client() as http:
        for method, path, body in ATTACKS:
            with trio.fail_after(30):
                reply = await http.request(method, path, json=body, headers=headers)
            assert reply.status_code == 403, (method, path, reply.text)
            assert "host not allowed" in reply.json()["error"]
            assert "access-control-allow-origin" not in reply.headers
        names = [m["name"] for m in (await http.get("/api/tags")).json()["models"]]
    assert names == [MODEL], "a refused request changed the store"
    await secured.still_serving()
    secured.nothing_written_outside_the_store()


ORIGINS = [
    ("http://localhost:80@evil.example", 403),
    ("http://localhost.evil.example", 403),
    ("http://localhost:3000.evil.example", 403),
    ("http://127.0.0.1.evil.example:8080", 403),
    ("https://evil.example", 403),
    ("null", 403),
    ("http://localhost:3000", 200),
    ("http://127.0.0.1", 200),
    ("https://localhost:8443", 200),
]


@pytest.mark.parametrize("origin, status", ORIGINS)
async def test_origins_are_parsed_as_urls_not_globbed(secured: Secured, origin: str,
                                                     status: int) -> None:
    async with secured.client() as http:
        reply = await http.get("/api/tags", headers={"Origin": origin})
        assert reply.status_code == status, reply.text
        if status == 200:
            assert reply.headers["access-control-allow-origin"] == origin
        else:
            assert "origin not allowed" in reply.json()["error"]
    await secured.still_serving(generate=False)
    secured.nothing_written_outside_the_store()


@pytest.mark.parametrize("host, status", [
    ("localhost", 200), ("localhost:11434", 200), ("127.0.0.1:1", 200), ("[::1]:11434", 200),
    ("LOCALHOST", 200), ("trusted.lan:8080", 200), ("trusted.lan", 200),
    ("only-this-port.lan:9000", 200), ("only-this-port.lan:9001", 403),
    ("evil.example", 403), ("127.0.0.1.evil.example", 403), ("localhost@evil.example", 403),
    ("evil.example:11434", 403),
])
async def test_allowed_hosts(nursery: trio.Nursery, host: str, status: int) -> None:
    with pytest.MonkeyPatch.context() as env:   # OLLAMA_ALLOWED_HOSTS is read at start
        env.setenv("OLLAMA_ALLOWED_HOSTS", "trusted.lan, only-this-port.lan:9000")
        served = await nursery.start(partial(serve, FakeBackend(), "127.0.0.1:0"))
    async with httpx.AsyncClient(base_url=served.url, trust_env=False) as http:
        reply = await http.get("/api/version", headers={"Host": host})
    assert reply.status_code == status, reply.text


async def test_a_server_bound_to_every_interface_answers_any_host(nursery: trio.Nursery) -> None:
    served = await nursery.start(partial(serve, FakeBackend(), "0.0.0.0:0"))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{served.port}",
                                 trust_env=False) as http:
        assert (await http.get("/api/version", headers={"Host": EVIL})).status_code == 200
        rebound = await http.get("/api/tags", headers={"Host": EVIL,
                                                       "Origin": f"http://{EVIL}"})
        assert rebound.status_code == 403, "same-origin is not judged by a foreign Host"
