"""Architectures beyond llama through the whole server: `trio-llm create` of a tiny qwen3 GGUF,
then /api/show and a greedy raw /api/generate on the real scheduler and engine."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from tests.e2e.conftest import cli, start
from tests.test_qwen3 import qwen3_model
from trio_llm.engine.generate import generate_text
from trio_llm.engine.model import Model
from trio_llm.engine.sampler import Sampler, SamplerOptions

PROMPT = "The capital of France is"


def greedy_in_process(path: Path, max_tokens: int) -> str:
    model = Model.load(path, n_ctx=64, n_threads=1)
    try:
        sampler = Sampler(SamplerOptions(temperature=0), model.net.vocab_size)
        return generate_text(model, PROMPT, sampler, max_tokens=max_tokens)
    finally:
        model.close()


async def test_a_tiny_qwen3_created_by_the_cli_answers_a_greedy_raw_generate(
        nursery: trio.Nursery, tmp_path: Path, smollm2_path: Path) -> None:
    gguf = qwen3_model(smollm2_path).write(tmp_path / "qwen3.gguf")
    (tmp_path / "Modelfile").write_text("FROM ./qwen3.gguf\n")
    host, _ = await start(nursery, tmp_path / "models")
    code, out = await cli(host, "create", "tiny-qwen3", cwd=tmp_path)
    assert code == 0, out
    async with httpx.AsyncClient(base_url=host.url, timeout=60) as http:
        show = (await http.post("/api/show", json={"model": "tiny-qwen3"})).json()
        assert show["model_info"]["general.architecture"] == "qwen3"
        assert show["details"]["family"] == "qwen3"
        reply = await http.post("/api/generate", json={
            "model": "tiny-qwen3", "prompt": PROMPT, "raw": True, "stream": False,
            "options": {"temperature": 0, "num_predict": 8}})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["done"] and body["eval_count"] >= 1
    # The server ran the same engine: its greedy text is the in-process greedy continuation.
    assert body["response"] == await trio.to_thread.run_sync(greedy_in_process, gguf, 8)
