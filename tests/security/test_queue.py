"""Defect class 6: OLLAMA_MAX_QUEUE bounds every waiting request, loaded model or not.

With NUM_PARALLEL=2 and MAX_QUEUE=4, 300 concurrent requests all got 200: the limit only
counted requests waiting for a load. Now at most 2 are served and 4 wait at any moment; the
rest are 503s with Retry-After, at once, whether the model is loading or loaded."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import trio

from tests.security.conftest import MODEL, start_secured

ROUNDS = [("the model is not loaded yet", False, 40), ("the model is loaded", True, 40)]


async def test_max_queue_holds_for_loaded_and_unloaded_models(
        nursery: trio.Nursery, tmp_path: Path, pulled_store: Path) -> None:
    secured = await start_secured(nursery, tmp_path, pulled_store, num_parallel=2, max_queue=4)
    async with secured.client() as http:
        for case, warm, n in ROUNDS:
            if warm:
                assert (await http.post("/api/generate", json={"model": MODEL})
                        ).status_code == 200
            statuses: Counter[int] = Counter()
            retry_after: set[str | None] = set()

            async def one(statuses: Counter[int] = statuses,
                          retry_after: set[str | None] = retry_after) -> None:
                reply = await http.post("/api/generate", json={
                    "model": MODEL, "prompt": "Tell me a story.", "stream": False,
                    "options": {"num_predict": 8}})
                statuses[reply.status_code] += 1
                if reply.status_code == 503:
                    retry_after.add(reply.headers.get("retry-after"))
                    assert "maximum pending requests exceeded" in reply.json()["error"]

            with trio.fail_after(300):
                async with trio.open_nursery() as clients:
                    for _ in range(n):
                        clients.start_soon(one)
            assert set(statuses) == {200, 503}, (case, statuses)
            assert statuses[200] >= 4 and statuses[503] >= n // 2, (case, statuses)
            assert retry_after == {"1"}, case
            assert secured.backend.queue_depth() == 0 and secured.backend.busy_slots() == 0
    await secured.still_serving()
    secured.nothing_written_outside_the_store()
