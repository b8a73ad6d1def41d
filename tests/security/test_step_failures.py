"""Defect class 3: one bad request, or one bad model file, must not hang anybody.

A step that raised used to unload the model while its requests waited forever, and a neighbour
streaming in the same batch froze. Client-sent triggers (`min_p: 2`, `context: [-1]` or ids
past the vocabulary, ...) are now 400s before any step, while a neighbour's stream runs on; a
model file the kernels reject (a NaN epsilon, `freq_base` 0, odd or oversized rope dimensions)
is refused with a 400 naming the problem (at create, or failing every request of its steps with
a 400, neighbours in the same batch failing too rather than waiting), and the server serves on."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.security.conftest import MODEL, start_secured, upload_blob
from tests.security.models import patched

BAD_REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    ("min_p 2", {"options": {"min_p": 2}}, "min_p"),
    ("min_p -1", {"options": {"min_p": -1}}, "min_p"),
    ("top_p 1.5", {"options": {"top_p": 1.5}}, "top_p"),
    ("typical_p 7", {"options": {"typical_p": 7}}, "typical_p"),
    ("temperature -1", {"options": {"temperature": -1}}, "temperature"),
    ("temperature 1e309", {"options": {"temperature": "1e309"}}, "temperature"),
    ("repeat_last_n -5", {"options": {"repeat_last_n": -5}}, "repeat_last_n"),
    ("num_batch -5", {"options": {"num_batch": -5}}, "num_batch"),
    ("num_batch 10**9", {"options": {"num_batch": 10**9}}, "num_batch"),
    ("num_ctx 10**12", {"options": {"num_ctx": 10**12}}, "num_ctx"),
    ("context [-1]", {"context": [-1]}, "context"),
    ("context past the vocabulary", {"context": [1, 2, 49152]}, "context"),
    ("context 2^63", {"context": [1 << 63]}, "context"),
]


async def stream_neighbour(http: Any, started: trio.Event, result: dict[str, Any]) -> None:
    """A long streamed generation; records its last line."""
    body = {"model": MODEL, "prompt": "Count from one to fifty.",
            "options": {"num_predict": 48, "temperature": 0}}
    async with http.stream("POST", "/api/generate", json=body) as reply:
        result["status"] = reply.status_code
        async for line in reply.aiter_lines():
            if line.strip():
                result["last"] = json.loads(line)
                started.set()


async def test_bad_requests_are_400s_and_their_neighbours_stream_on(
        nursery: trio.Nursery, tmp_path: Path, pulled_store: Path) -> None:
    secured = await start_secured(nursery, tmp_path, pulled_store, num_parallel=2)
    async with secured.client() as http:
        for case, extra, needle in BAD_REQUESTS:
            neighbour: dict[str, Any] = {}
            with trio.fail_after(120):
                async with trio.open_nursery() as inner:
                    started = trio.Event()
                    inner.start_soon(stream_neighbour, http, started, neighbour)
                    await started.wait()
                    text = json.dumps({"model": MODEL, "prompt": "Hi", "stream": False, **extra})
                    reply = await http.post("/api/generate",
                                            content=text.replace('"1e309"', "1e309"))
                    assert reply.status_code == 400, (case, reply.text)
                    assert needle in reply.json()["error"], case
            assert neighbour["status"] == 200 and neighbour["last"]["done"] is True, case
            assert "error" not in neighbour["last"], case
    await secured.still_serving()
    secured.nothing_written_outside_the_store()


BAD_FILES: list[tuple[str, dict[str, float]]] = [
    ("NaN epsilon", {"llama.attention.layer_norm_rms_epsilon": math.nan}),
    ("freq_base 0", {"llama.rope.freq_base": 0.0}),
    ("odd rope dimensions", {"llama.rope.dimension_count": 63}),
    ("rope wider than a head", {"llama.rope.dimension_count": 128}),
]


async def test_models_the_kernels_reject_fail_their_requests_and_hang_nobody(
        nursery: trio.Nursery, tmp_path: Path, pulled_store: Path, smollm2_path: Path,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    secured = await start_secured(nursery, tmp_path, pulled_store, num_parallel=2)
    inputs = tmp_path_factory.mktemp("bad-model")
    async with secured.client() as http:
        for case, values in BAD_FILES:
            statuses: list[int] = []
            bad = patched(smollm2_path, inputs / "bad.gguf", values=values)
            digest = await upload_blob(http, bad.read_bytes())
            created = await http.post("/api/create", json={
                "model": "bad", "files": {"model.gguf": digest}, "stream": False})
            if created.status_code == 400:           # refused before it became a model: fine
                statuses.append(400)
            else:
                assert created.status_code == 200, (case, created.text)

                async def ask(prompt: str, statuses: list[int] = statuses) -> None:
                    reply = await http.post("/api/generate", json={
                        "model": "bad", "prompt": prompt, "stream": False,
                        "options": {"num_predict": 4}})
                    assert "error" in reply.json(), reply.text
                    assert "/" not in reply.json()["error"], "no path in an error"
                    statuses.append(reply.status_code)

                with trio.fail_after(120):           # two requests of one batch: both answered
                    async with trio.open_nursery() as inner:
                        inner.start_soon(ask, "Hello there")
                        inner.start_soon(ask, "Another prompt")
                deleted = await http.request("DELETE", "/api/delete", json={"model": "bad"})
                assert deleted.status_code == 200
            assert statuses and all(s == 400 for s in statuses), (case, statuses)
            await secured.still_serving()
    secured.nothing_written_outside_the_store()
