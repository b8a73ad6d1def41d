"""Defect class 8, the smaller ones, each a row: names too long for the file system, JSON
nested 100,000 deep, Ollama clients' `seed: -1`, `num_thread: 10**10`, `num_batch: -5`, `raw`
with `system`, images for a model without vision, empty or non-image payloads, 404 bodies
that were not JSON, and a model file that cannot load whose real error was masked by a
BufferError. Every answer is a clear 4xx (or the 200 the request deserves) with a JSON body
that holds no file-system path; the server serves on and nothing lands outside the store."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tests.security.conftest import MODEL, Secured, upload_blob
from tests.security.models import patched

LONG_HOST = "a" * 300 + "/library/model"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


def generate(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": "Hi", "stream": False,
            "options": {"num_predict": 2, **fields.pop("options", {})}, **fields}


def deep(levels: int) -> bytes:
    return b'{"model": "smollm2:135m", "prompt": ' + b"[" * levels + b"]" * levels + b"}"


ROWS: list[tuple[str, str, str, Any, int, str]] = [
    # (case, method, path, body (dict or raw bytes), status, words the error must hold)
    ("a 300-byte host part: show", "POST", "/api/show", {"model": LONG_HOST}, 400, "invalid"),
    ("a 300-byte host part: pull", "POST", "/api/pull", {"model": LONG_HOST}, 400, "invalid"),
    ("a 300-byte host part: copy", "POST", "/api/copy",
     {"source": MODEL, "destination": LONG_HOST}, 400, "invalid"),
    ("a 300-byte host part: delete", "DELETE", "/api/delete", {"model": LONG_HOST}, 400,
     "invalid"),
    ("a 300-byte host part: create", "POST", "/api/create",
     {"model": LONG_HOST, "from": MODEL}, 400, "invalid"),
    ("JSON nested 100,000 deep", "POST", "/api/generate", deep(100_000), 400, "nest"),
    ("JSON nested 1,000 deep", "POST", "/api/chat", deep(1_000), 400, "nest"),
    ("seed -1 means random", "POST", "/api/generate", generate(options={"seed": -1}), 200, ""),
    ("num_thread 10**10", "POST", "/api/generate", generate(options={"num_thread": 10**10}),
     200, ""),
    ("num_thread -3", "POST", "/api/generate", generate(options={"num_thread": -3}), 400,
     "num_thread"),
    ("num_batch -5", "POST", "/api/generate", generate(options={"num_batch": -5}), 400,
     "num_batch"),
    ("raw with system", "POST", "/api/generate", generate(raw=True, system="be evil"), 400,
     "raw mode"),
    ("images without vision: generate", "POST", "/api/generate",
     generate(images=[base64.b64encode(PNG).decode()]), 400, "vision"),
    ("images without vision: chat", "POST", "/api/chat",
     {"model": MODEL, "stream": False, "messages": [
         {"role": "user", "content": "what is this?",
          "images": [base64.b64encode(PNG).decode()]}]}, 400, "vision"),
    ("an empty image", "POST", "/api/generate", generate(images=[""]), 400, "empty"),
    ("an image that is not one", "POST", "/api/generate",
     generate(images=[base64.b64encode(b"#!/bin/sh\nrm -rf /\n").decode()]), 400,
     "not a PNG"),
    ("an unknown route", "GET", "/api/nothing", None, 404, "404 page not found"),
    ("an unknown route under /v1", "POST", "/v1/nothing", {}, 404, "404 page not found"),
    ("a wrong method", "GET", "/api/pull", None, 405, "405 method not allowed"),
]


async def test_small_defects_answer_clearly(secured: Secured) -> None:
    async with secured.client() as http:
        for case, method, path, body, status, words in ROWS:
            if isinstance(body, bytes):
                reply = await http.request(method, path, content=body)
            else:
                reply = await http.request(method, path, json=body)
            assert reply.status_code == status, (case, reply.status_code, reply.text[:300])
            assert reply.headers["content-type"].startswith("application/json"), case
            answer = reply.json()
            assert str(secured.store) not in reply.text and "/tmp/" not in reply.text, case
            if status >= 400:
                assert words in answer["error"], (case, answer)
    await secured.still_serving()
    secured.nothing_written_outside_the_store()


async def test_num_thread_never_reloads_the_model(secured: Secured) -> None:
    scheduler = secured.backend.scheduler
    async with secured.client() as http:
        loaded = None
        for threads in (1, 2, 10**10, 0, 1):
            reply = await http.post("/api/generate", json=generate(
                options={"num_thread": threads}))
            assert reply.status_code == 200, reply.text
            model = scheduler.model(MODEL)
            assert loaded is None or model is loaded, f"num_thread {threads} reloaded the model"
            loaded = model
    await secured.still_serving()
    secured.nothing_written_outside_the_store()


async def test_a_model_that_cannot_load_says_why(secured: Secured, smollm2_path: Path,
                                                 tmp_path_factory: pytest.TempPathFactory
                                                 ) -> None:
    missing = "blk.29.ffn_down.weight"
    bad = patched(smollm2_path, tmp_path_factory.mktemp("unloadable") / "bad.gguf",
                  renames={missing: missing[:-1] + "x"})
    async with secured.client() as http:
        digest = await upload_blob(http, bad.read_bytes())
        created = await http.post("/api/create", json={
            "model": "unloadable", "files": {"model.gguf": digest}, "stream": False})
        if created.status_code == 200:       # not refused at create: the load must say why
            reply = await http.post("/api/generate", json={
                "model": "unloadable", "prompt": "Hi", "stream": False})
        else:
            reply = created
        assert reply.status_code == 400, reply.text      # the file's fault: a 4xx
        error = json.loads(reply.text)["error"]
        assert "exported pointers" not in error and missing in error, error
        assert str(secured.store) not in error
    await secured.still_serving()
    secured.nothing_written_outside_the_store()
