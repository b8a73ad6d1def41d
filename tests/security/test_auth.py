"""OLLAMA_API_KEYS: every route of the application x {no key, inference key, admin key, wrong
key}. Open routes answer everyone; inference routes want an inference or admin key; the rest
want an admin key. Refusals are 401 (no or unknown key, with WWW-Authenticate) or 403 (a key
whose scope is too narrow), as JSON in the route's own error shape. The CLI sends
OLLAMA_API_KEY. The routes are read from the application itself, so a new route is in the
matrix the day it is added."""

from __future__ import annotations

from functools import partial
from typing import Any

import httpx
import pytest
import trio

from tests.e2e.conftest import cli
from trio_llm.api.app import create_app
from trio_llm.api.auth import required_scope
from trio_llm.api.serve import serve
from trio_llm.config import Host, parse_api_keys
from trio_llm.testing.fake_backend import FakeBackend

INFERENCE_KEY = "inf-3f1c9a7e"
ADMIN_KEY = "adm-8b2d4e6f"
KEYS = {INFERENCE_KEY: "inference", ADMIN_KEY: "admin"}
CALLERS = {"no key": None, "inference key": INFERENCE_KEY, "admin key": ADMIN_KEY,
           "wrong key": "adm-8b2d4e6e"}

BODIES: dict[str, Any] = {
    "/api/generate": {"model": "fake", "prompt": "hi"},
    "/api/chat": {"model": "fake", "messages": [{"role": "user", "content": "hi"}]},
    "/api/embed": {"model": "fake", "input": "hi"},
    "/api/embeddings": {"model": "fake", "prompt": "hi"},
    "/api/show": {"model": "fake"},
    "/api/copy": {"source": "fake", "destination": "copied"},
    "/api/delete": {"model": "copied"},
    "/api/create": {"model": "made", "from": "fake"},
    "/api/pull": {"model": "fake"},
    "/api/push": {"model": "fake"},
    "/v1/chat/completions": {"model": "fake", "messages": [{"role": "user", "content": "hi"}]},
    "/v1/completions": {"model": "fake", "prompt": "hi"},
    "/v1/embeddings": {"model": "fake", "input": "hi"},
}


def routes() -> list[tuple[str, str]]:
    """(method, concrete path) for every rule and method the application serves."""
    app = create_app(FakeBackend(), api_keys={})
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule.replace("<digest>", "sha256:" + "0" * 64).replace(
            "<path:model>", "fake")
        for method in sorted((rule.methods or set()) - {"OPTIONS"}):
            found.append((method, path))
    return sorted(set(found))


def expected(path: str, caller: str) -> str:
    """"ok" (anything but 401/403), "401" or "403"."""
    scope = required_scope(path)
    if scope is None or caller == "admin key":
        return "ok"
    if caller in ("no key", "wrong key"):
        return "401"
    return "ok" if scope == "inference" else "403"


@pytest.fixture
async def guarded(nursery: trio.Nursery) -> Host:
    return await nursery.start(partial(serve, FakeBackend(), "127.0.0.1:0", api_keys=KEYS))


async def test_every_route_answers_each_caller_as_specified(guarded: Host) -> None:
    table = routes()
    assert {"/", "/api/version", "/health", "/api/pull", "/v1/models", "/metrics"} <= {
        p for _, p in table}
    async with httpx.AsyncClient(base_url=guarded.url, trust_env=False, timeout=30) as http:
        for method, path in table:
            for caller, key in CALLERS.items():
                headers = {"Authorization": f"Bearer {key}"} if key else {}
                body = BODIES.get(path) if method in ("POST", "DELETE") else None
                with trio.fail_after(30):
                    reply = await http.request(method, path, json=body, headers=headers)
                want = expected(path, caller)
                where = (method, path, caller, reply.status_code, reply.text[:200])
                if want == "ok":
                    assert reply.status_code not in (401, 403), where
                    continue
                assert reply.status_code == int(want), where
                if method == "HEAD":
                    continue
                error = reply.json()["error"]
                message = error["message"] if path.startswith("/v1/") else error
                assert ("unauthorized" if want == "401" else "forbidden") in message, where
                if want == "401":
                    assert reply.headers["www-authenticate"] == "Bearer", where


@pytest.mark.parametrize("header", ["Bearer", "Basic " + ADMIN_KEY, ADMIN_KEY,
                                    "Bearer " + ADMIN_KEY + "x", "Bearer " + ADMIN_KEY[:-1]])
async def test_malformed_or_near_miss_credentials_are_401(guarded: Host, header: str) -> None:
    async with httpx.AsyncClient(base_url=guarded.url, trust_env=False) as http:
        reply = await http.get("/api/tags", headers={"Authorization": header})
    assert reply.status_code == 401, reply.text


async def test_health_is_open_and_reports_readiness(guarded: Host) -> None:
    async with httpx.AsyncClient(base_url=guarded.url, trust_env=False) as http:
        health = (await http.get("/health")).json()
    assert health == {"status": "ok", "loaded_models": [], "queue_depth": 0, "busy_slots": 0}


async def test_the_cli_sends_ollama_api_key(guarded: Host, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    monkeypatch.delenv("OLLAMA_API_KEY", raising=False)
    code, out = await cli(guarded, "list")
    assert code == 1 and "unauthorized" in out
    monkeypatch.setenv("OLLAMA_API_KEY", INFERENCE_KEY)
    code, out = await cli(guarded, "list")
    assert code == 0 and "fake" in out, out
    code, out = await cli(guarded, "cp", "fake", "other")
    assert code == 1 and "forbidden" in out, out
    monkeypatch.setenv("OLLAMA_API_KEY", ADMIN_KEY)
    code, out = await cli(guarded, "cp", "fake", "other")
    assert code == 0, out


@pytest.mark.parametrize("text, keys", [
    ("a:inference", {"a": "inference"}),
    ("a:inference, b:admin\nc:admin # ops", {"a": "inference", "b": "admin", "c": "admin"}),
    ("k:with:colons:admin", {"k:with:colons": "admin"}),
])
def test_key_lists_parse(text: str, keys: dict[str, str]) -> None:
    assert parse_api_keys(text) == keys


@pytest.mark.parametrize("text", ["justakey", "a:root", ":admin", "@/nonexistent/keys"])
def test_a_malformed_key_list_is_an_error_not_an_open_server(text: str) -> None:
    with pytest.raises(ValueError):
        parse_api_keys(text)


def test_keys_from_a_file(tmp_path: Any) -> None:
    path = tmp_path / "keys"
    path.write_text("# keys for the team\nalpha:inference\nbeta:admin\n")
    assert parse_api_keys(f"@{path}") == parse_api_keys(str(path)) == {
        "alpha": "inference", "beta": "admin"}


async def test_the_anthropic_client_is_let_in_by_its_x_api_key_header(guarded: Host) -> None:
    import anthropic
    ask = {"model": "fake", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    allowed = anthropic.AsyncAnthropic(base_url=guarded.url, api_key=INFERENCE_KEY)
    reply = await allowed.messages.create(**ask)
    assert reply.type == "message" and reply.content[-1].type == "text"
    refused = anthropic.AsyncAnthropic(base_url=guarded.url, api_key="adm-8b2d4e6e")
    with pytest.raises(anthropic.AuthenticationError) as caught:
        await refused.messages.create(**ask)
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "authentication_error"
