"""Every error case answers its status and Ollama's words, and the server keeps serving."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from functools import partial

import httpx
import pytest
import trio

from tests.api.conftest import local_client, raw_request
from trio_llm.api import serve
from trio_llm.api.app import MAX_JSON_BODY
from trio_llm.api.errors import status_and_message
from trio_llm.config import Host
from trio_llm.testing.fake_backend import FakeBackend


@pytest.mark.parametrize(("path", "body", "status", "error"), [
    ("/api/generate", b"", 400, "missing request body"),
    ("/api/generate", b"{not json", 400, None),
    ("/api/generate", b'{"model": "fake", "prompt": "x"', 400, "unexpected EOF"),
    ("/api/generate", b"[1, 2]", 400, None),
    ("/api/generate", b'{"model": "fake", "prompt": 5}', 400,
     "json: cannot unmarshal number into Go struct field GenerateRequest.prompt of type string"),
    ("/api/generate", b'{"model": "fake", "prompt": "x", "stream": "yes"}', 400,
     "json: cannot unmarshal string into Go struct field GenerateRequest.stream of type bool"),
    ("/api/generate", b'{"model": "fake", "prompt": "x", "options": {"temperature": "hot"}}',
     400, 'option "temperature" must be of type float32'),
    ("/api/generate", b'{"model": "fake", "prompt": "x", "options": {"num_predict": "9"}}',
     400, 'option "num_predict" must be of type integer'),
    ("/api/generate", b'{"prompt": "x"}', 404, "model '' not found"),
    ("/api/generate", b'{"model": "nope", "prompt": "x"}', 404, "model 'nope' not found"),
    ("/api/generate", b'{"model": "Bad Name!", "prompt": "x"}', 400, "invalid model name"),
    ("/api/generate", b'{"model": "fake", "prompt": "x", "raw": true, "system": "s"}', 400,
     "raw mode does not support template, system, or context"),
    ("/api/generate", b'{"model": "fake", "prompt": "x", "raw": true, "context": [1]}', 400,
     "raw mode does not support template, system, or context"),
    ("/api/generate", b'{"model": "fake", "prompt": "x", "keep_alive": "soon"}', 400,
     'time: invalid duration "soon"'),
    ("/api/generate", b'{"model": "fake", "prompt": "x", "think": "loud"}', 400,
     'invalid think value: "loud" (must be "high", "medium", "low", "max", true, or false)'),
    ("/api/generate", b'{"model": "plain", "prompt": "x", "think": true}', 400,
     '"plain:latest" does not support thinking'),
    ("/api/generate", b'{"model": "plain", "prompt": "x", "suffix": "y"}', 400,
     "plain:latest does not support insert"),
    ("/api/generate", b'{"model": "embedder", "prompt": "x"}', 400,
     '"embedder:latest" does not support generate'),
    ("/api/generate",
     b'{"model": "fake", "prompt": "x", "template": "{{ \'\'.__class__.__mro__ }}"}', 400,
     None),
    ("/api/chat", b'{"messages": []}', 400, "model is required"),
    ("/api/chat", b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}', 404,
     "model 'nope' not found"),
    ("/api/chat", b'{"model": "fake", "messages": {"role": "user"}}', 400,
     "json: cannot unmarshal object into Go struct field ChatRequest.messages of type "
     "[]api.Message"),
    ("/api/chat", b'{"model": "plain", "messages": [{"role": "user", "content": "x"}], '
                  b'"tools": [{"type": "function"}]}', 400, "plain:latest does not support tools"),
    ("/api/embed", b'{"model": "fake", "input": [1]}', 400, "invalid input type"),
    ("/api/embed", b'{"input": "x"}', 404, "model '' not found"),
    ("/api/embeddings", b'{"prompt": "x"}', 400, "model is required"),
    ("/api/show", b'{}', 400, "model is required"),
    ("/api/show", b'{"model": "nope"}', 404, "model 'nope' not found"),
    ("/api/copy", b'{"source": "nope", "destination": "x"}', 404, 'model "nope" not found'),
    ("/api/copy", b'{"source": "fake"}', 400, "source and destination are required"),
    ("/api/create", b'{"model": "x", "from": "nope"}', 404, "model 'nope' not found"),
    ("/api/create", b'{"model": "x"}', 400, "neither 'from' or 'files' was specified"),
    ("/api/pull", b'{}', 400, "model is required"),
    ("/api/push", b'{"model": "nope"}', 404, "model 'nope' not found"),
])
async def test_bad_requests_answer_status_and_ollama_wording(
        client: httpx.AsyncClient, fake: FakeBackend, path: str, body: bytes, status: int,
        error: str | None) -> None:
    response = await client.post(path, content=body)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    answer = response.json()
    assert list(answer) == ["error"] and answer["error"]
    if error is not None:
        assert answer["error"] == error
    assert "Traceback" not in response.text
    after = await client.post("/api/generate", json={"model": "fake", "prompt": "still here",
                                                     "stream": False})
    assert after.status_code == 200 and after.json()["done"] is True


async def test_delete_of_a_missing_model_is_404(client: httpx.AsyncClient) -> None:
    response = await client.request("DELETE", "/api/delete", json={"model": "nope"})
    assert response.status_code == 404
    assert response.json() == {"error": "model 'nope' not found"}


async def test_form_encoded_json_from_curl_d_is_accepted(client: httpx.AsyncClient,
                                                         model: str) -> None:
    body = json.dumps({"model": model, "prompt": "hi", "stream": False})
    response = await client.post("/api/generate", content=body,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200 and response.json()["done"] is True


async def test_blob_digest_is_validated(client: httpx.AsyncClient) -> None:
    bad = await client.post("/api/blobs/sha256:1234", content=b"x")
    assert (bad.status_code, bad.json()) == (400, {"error": "invalid digest format"})
    wrong = "sha256:" + hashlib.sha256(b"other").hexdigest()
    mismatch = await client.post(f"/api/blobs/{wrong}", content=b"data")
    assert mismatch.status_code == 400
    assert mismatch.json()["error"].startswith(f'digest mismatch, expected "{wrong}", got ')
    assert (await client.head(f"/api/blobs/{wrong}")).status_code == 404


async def test_unknown_path_and_wrong_method_answer_json_with_ollamas_words(
        client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/nothing")
    assert (missing.status_code, missing.json()) == (404, {"error": "404 page not found"})
    wrong = await client.get("/api/generate")
    assert (wrong.status_code, wrong.json()) == (405, {"error": "405 method not allowed"})


async def test_full_queue_answers_503(client: httpx.AsyncClient, fake: FakeBackend) -> None:
    fake.slots = trio.Semaphore(1)
    fake.max_queue = 1
    fake.pause_at = 1
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(client.post, "/api/generate",
                                   json={"model": "fake", "prompt": "a b c", "stream": False}))
        await fake.paused.wait()
        nursery.start_soon(partial(client.post, "/api/generate",
                                   json={"model": "fake", "prompt": "y", "stream": False}))
        while fake.waiting < 1:
            await trio.sleep(0.01)
        busy = await client.post("/api/generate", json={"model": "fake", "prompt": "x"})
        assert busy.status_code == 503 and busy.headers["Retry-After"]
        assert busy.json() == {"error": "server busy, please try again.  maximum pending "
                                        "requests exceeded"}
        fake.resume.set()
    ok = await client.post("/api/generate", json={"model": "fake", "prompt": "x",
                                                  "stream": False})
    assert ok.status_code == 200


async def test_embeddings_and_loads_wait_in_the_same_bounded_queue(
        client: httpx.AsyncClient, fake: FakeBackend) -> None:
    fake.slots = trio.Semaphore(1)
    fake.max_queue = 1
    fake.pause_at = 1
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(client.post, "/api/generate",
                                   json={"model": "fake", "prompt": "a b c", "stream": False}))
        await fake.paused.wait()
        nursery.start_soon(partial(client.post, "/api/embed",
                                   json={"model": "embedder", "input": "queued"}))
        while fake.waiting < 1:
            await trio.sleep(0.01)
        embed = await client.post("/api/embed", json={"model": "embedder", "input": "x"})
        load = await client.post("/api/generate", json={"model": "plain"})
        assert (embed.status_code, load.status_code) == (503, 503)
        assert embed.headers["Retry-After"] and load.headers["Retry-After"]
        fake.resume.set()
    assert fake.waiting == 0 and fake.slots.value == 1


async def test_failure_after_streaming_started_ends_with_an_error_line(
        client: httpx.AsyncClient, fake: FakeBackend) -> None:
    fake.fail_after = 2
    response = await client.post("/api/generate", json={"model": "fake", "prompt": "a b c d",
                                                        "think": False})
    assert response.status_code == 200
    chunks = [json.loads(line) for line in response.text.splitlines()]
    assert [c.get("response") for c in chunks[:2]] == ["user:", " a"]
    assert chunks[-1] == {"error": "the fake model failed mid-stream"}
    fake.fail_after = None
    assert (await client.post("/api/generate", json={"model": "fake", "prompt": "x",
                                                     "stream": False})).status_code == 200


async def test_unexpected_failure_before_output_is_a_500_without_traceback(
        client: httpx.AsyncClient, fake: FakeBackend, caplog: pytest.LogCaptureFixture) -> None:
    fake.fail_after = 0
    response = await client.post("/api/chat", json={
        "model": "fake", "think": False, "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 500
    assert response.json() == {"error": "the fake model failed mid-stream"}
    assert "Traceback" in caplog.text  # logged for us, never sent to the client
    assert "Traceback" not in response.text


async def test_failed_stream_without_streaming_is_a_500(client: httpx.AsyncClient,
                                                        fake: FakeBackend) -> None:
    fake.fail_after = 1
    response = await client.post("/api/generate", json={"model": "fake", "prompt": "a b",
                                                         "stream": False})
    assert response.status_code == 500
    assert response.json() == {"error": "the fake model failed mid-stream"}


async def test_pull_of_an_unknown_model_reports_in_the_stream(client: httpx.AsyncClient,
                                                              fake: FakeBackend) -> None:
    response = await client.post("/api/pull", json={"model": "unknown"})
    assert response.status_code == 200
    events = [json.loads(line) for line in response.text.splitlines()]
    assert events == [{"status": "pulling manifest"},
                      {"error": "pull model manifest: file does not exist"}]


async def test_oversized_json_body_is_413(server: Host) -> None:
    declared = MAX_JSON_BODY + 1
    head = (f"POST /api/generate HTTP/1.1\r\nHost: localhost\r\n"
            f"Content-Type: application/json\r\n"
            f"Content-Length: {declared}\r\nConnection: close\r\n\r\n").encode()
    reply, seconds = await raw_request(server, head + b'{"model": "fake", "prompt": "')
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 413 "
    assert rest.endswith(b'{"error":"request body too large"}')
    assert seconds < 2


async def test_body_limit_applies_to_json_but_not_to_blob_uploads(nursery: trio.Nursery) -> None:
    host = await nursery.start(partial(serve, FakeBackend(), "127.0.0.1:0",
                                       max_body_bytes=1000))
    async with local_client(host) as http:
        big = await http.post("/api/generate", json={"model": "fake", "prompt": "x" * 2000})
        assert (big.status_code, big.json()) == (413, {"error": "request body too large"})
        data = bytes(5000)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        assert (await http.post(f"/api/blobs/{digest}", content=data)).status_code == 201
        small = await http.post("/api/generate", json={"model": "fake", "prompt": "x",
                                                       "stream": False})
        assert small.status_code == 200


@pytest.mark.parametrize("code, status", [(errno.ENAMETOOLONG, 400), (errno.EMFILE, 503),
                                          (errno.ENFILE, 503), (errno.EACCES, 500)])
def test_os_errors_answer_by_errno_and_never_with_a_path(code: int, status: int) -> None:
    exc = OSError(code, os.strerror(code), "/home/user/.ollama/models/manifests/x/y")
    got, message = status_and_message(exc)
    assert (got, message) == (status, os.strerror(code))
    wrapped = RuntimeError(f"failed: {exc}")
    assert "/home/user" not in status_and_message(wrapped)[1]
