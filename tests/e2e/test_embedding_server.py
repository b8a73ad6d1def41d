"""An embedding model served end to end: all-MiniLM-L6-v2 as a bert GGUF created in a real
store, the real scheduler and engine, real HTTP and the official clients. Its vectors are the
float64 reference's pooled output; it embeds, and it refuses to generate."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import ollama
import openai
import pytest
import trio
from tokenizers import Tokenizer as HFTokenizer

from tests.e2e.conftest import start
from tests.reference_bert import ReferenceBert
from trio_llm.config import Host
from trio_llm.server import EngineBackend
from trio_llm.store.progress import drain
from trio_llm.store.store import Store
from trio_llm.testing.minilm import read_safetensors

MODEL = "all-minilm:latest"
INPUTS = ["The cat sat on the mat.", "A dog barked at the mailman!", "Quantum chromodynamics",
          "naïve café in 東京", "short", "Embeddings map text to vectors of numbers.",
          "The cat sat on the mat.", "Completely unrelated: stock prices fell sharply today."]


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory, bert_path: Path) -> Path:
    """A store where `all-minilm` was created from the bert GGUF (FROM ./file.gguf)."""
    root = tmp_path_factory.mktemp("embedding-models")
    drain(Store(root).create_from_modelfile("all-minilm", f"FROM ./{bert_path.name}\n",
                                            base_dir=bert_path.parent))
    return root


@pytest.fixture(scope="module")
def token_ids(minilm_dir: Path) -> list[list[int]]:
    """INPUTS tokenized by the model's own tokenizer.json."""
    tokenizer = HFTokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    tokenizer.no_padding()
    return [tokenizer.encode(t).ids for t in INPUTS]


@pytest.fixture(scope="module")
def expected(minilm_dir: Path, token_ids: list[list[int]]) -> np.ndarray:
    """The float64 reference's mean-pooled, L2-normalised vectors of INPUTS, on the original
    Hugging Face weights."""
    config = json.loads((minilm_dir / "config.json").read_text())
    reference = ReferenceBert(config, read_safetensors(minilm_dir / "model.safetensors"))
    vectors = np.array([reference.embedding(ids) for ids in token_ids])
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture
async def live(nursery: trio.Nursery, store_dir: Path) -> tuple[Host, EngineBackend]:
    return await start(nursery, store_dir)


def cosines(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    got = got / np.linalg.norm(got, axis=1, keepdims=True)
    return np.sum(got * want, axis=1)


async def test_api_embed_of_8_inputs_is_the_reference_and_each_alone(
        live: tuple[Host, EngineBackend], expected: np.ndarray,
        token_ids: list[list[int]]) -> None:
    c = ollama.AsyncClient(host=live[0].url)
    batch = await c.embed(model=MODEL, input=INPUTS)
    vectors = np.array(batch.embeddings)
    assert vectors.shape == (8, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
    assert cosines(vectors, expected).min() > 0.9999
    alone = np.array([(await c.embed(model=MODEL, input=text)).embeddings[0] for text in INPUTS])
    np.testing.assert_allclose(vectors, alone, rtol=0, atol=1e-6)
    assert batch.prompt_eval_count == sum(map(len, token_ids))


async def test_legacy_api_embeddings_and_v1_embeddings_use_the_same_pooling(
        live: tuple[Host, EngineBackend], expected: np.ndarray) -> None:
    async with httpx.AsyncClient(base_url=live[0].url, timeout=60) as http:
        legacy = (await http.post("/api/embeddings",
                                  json={"model": MODEL, "prompt": INPUTS[1]})).json()
    raw = np.array(legacy["embedding"])
    assert abs(np.linalg.norm(raw) - 1.0) > 1e-3          # the legacy route is not normalised
    assert cosines(raw[None], expected[1:2])[0] > 0.9999
    c = openai.AsyncOpenAI(base_url=f"{live[0].url}/v1", api_key="unused")
    out = await c.embeddings.create(model=MODEL, input=INPUTS[:3])
    got = np.array([d.embedding for d in out.data])
    assert cosines(got, expected[:3]).min() > 0.9999


async def test_it_shows_embedding_and_refuses_generate_and_chat(
        live: tuple[Host, EngineBackend]) -> None:
    async with httpx.AsyncClient(base_url=live[0].url, timeout=60) as http:
        show = (await http.post("/api/show", json={"model": MODEL})).json()
        assert show["capabilities"] == ["embedding"]
        assert show["model_info"]["general.architecture"] == "bert"
        generate = await http.post("/api/generate", json={"model": MODEL, "prompt": "Hi"})
        assert generate.status_code == 400
        assert generate.json() == {"error": f'"{MODEL}" does not support generate'}
        chat = await http.post("/api/chat", json={
            "model": MODEL, "messages": [{"role": "user", "content": "Hi"}]})
        assert chat.status_code == 400
        assert chat.json() == {"error": f'"{MODEL}" does not support chat'}
        v1 = await http.post("/v1/chat/completions", json={
            "model": MODEL, "messages": [{"role": "user", "content": "Hi"}]})
        assert v1.status_code == 400 and "does not support" in v1.text
        after = await http.post("/api/embed", json={"model": MODEL, "input": "still serving"})
        assert after.status_code == 200 and len(after.json()["embeddings"][0]) == 384


async def test_a_long_input_is_cut_to_the_context_keeping_its_sep_or_refused(
        live: tuple[Host, EngineBackend], minilm_dir: Path) -> None:
    text = " ".join(["river"] * 600)          # 602 tokens with [CLS] and [SEP]; context 512
    config = json.loads((minilm_dir / "config.json").read_text())
    reference = ReferenceBert(config, read_safetensors(minilm_dir / "model.safetensors"))
    want = reference.embedding([101] + [2314] * 510 + [102])
    async with httpx.AsyncClient(base_url=live[0].url, timeout=120) as http:
        cut = (await http.post("/api/embed", json={"model": MODEL, "input": text})).json()
        refused = await http.post("/api/embed", json={"model": MODEL, "input": text,
                                                      "truncate": False})
    assert cut["prompt_eval_count"] == 512
    assert cosines(np.array(cut["embeddings"]), want[None] / np.linalg.norm(want))[0] > 0.9999
    assert refused.status_code == 400
    assert refused.json()["error"].startswith("the input length exceeds the context length: "
                                              "input 0 is ")


# 32 encodings and each alone again: the full tier; the batch of 8 above stays in the fast one
@pytest.mark.full
async def test_api_embed_of_32_inputs_in_one_forward_equals_each_input_alone_bit_for_bit(
        live: tuple[Host, EngineBackend]) -> None:
    """32 inputs of different lengths (a long one cut to the context among them) go through
    the encoder together, each in its own KV slot; every vector is exactly its solo one, and
    the cut input is reported."""
    inputs = [f"{INPUTS[i % len(INPUTS)]} number {i} " + "word " * (i * 3) for i in range(31)]
    inputs.append(" ".join(["river"] * 600))
    async with httpx.AsyncClient(base_url=live[0].url, timeout=300) as http:
        together = (await http.post("/api/embed", json={"model": MODEL, "input": inputs})).json()
        alone = [(await http.post("/api/embed", json={"model": MODEL, "input": text})).json()
                 for text in inputs]
    assert len(together["embeddings"]) == 32
    assert together["embeddings"] == [one["embeddings"][0] for one in alone]
    assert together["truncated_inputs"] == [31]
    assert together["prompt_eval_count"] == sum(one["prompt_eval_count"] for one in alone)


async def test_rerank_of_five_documents_puts_the_obviously_relevant_one_first(
        live: tuple[Host, EngineBackend]) -> None:
    documents = ["The stock market fell sharply on Tuesday.",
                 "Paris is the capital and largest city of France.",
                 "Bananas are rich in potassium.",
                 "The recipe needs two cups of flour.",
                 "Jupiter is the largest planet in the solar system."]
    body = {"model": MODEL, "query": "What is the capital of France?", "documents": documents}
    async with httpx.AsyncClient(base_url=live[0].url, timeout=60) as http:
        ranked = (await http.post("/api/rerank", json=body)).json()
        top2 = (await http.post("/v1/rerank", json={**body, "top_n": 2,
                                                    "return_documents": False})).json()
        unknown = await http.post("/api/rerank", json={**body, "rank_fields": ["text"]})
    assert ranked["method"] == "embedding-similarity" and ranked["model"] == MODEL
    results = ranked["results"]
    assert [r["index"] for r in results][0] == 1 and len(results) == 5
    assert results[0]["document"] == {"text": documents[1]}
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True) and scores[0] - scores[1] > 0.1
    assert sorted(r["index"] for r in results) == list(range(5))
    assert ranked["usage"]["prompt_tokens"] > 0
    assert [r["index"] for r in top2["results"]] == [r["index"] for r in results[:2]]
    assert "document" not in top2["results"][0]
    assert unknown.status_code == 400 and "rank_fields" in unknown.text


async def test_concurrent_batched_embed_requests_share_the_encoders_slots_and_stay_exact(
        nursery: trio.Nursery, store_dir: Path) -> None:
    """Four requests at once (OLLAMA_NUM_PARALLEL=4), each of 12 inputs: they take the
    encoder's slots in turn and every vector is still its solo one."""
    host, _ = await start(nursery, store_dir, num_parallel=4)
    batches = [[f"{text} (request {r})" for text in INPUTS + INPUTS[:4]] for r in range(4)]
    got: dict[int, list] = {}
    async with httpx.AsyncClient(base_url=host.url, timeout=300) as http:
        async def one(r: int) -> None:
            reply = await http.post("/api/embed", json={"model": MODEL, "input": batches[r]})
            assert reply.status_code == 200, reply.text
            got[r] = reply.json()["embeddings"]

        async with trio.open_nursery() as group:
            for r in range(4):
                group.start_soon(one, r)
        alone = (await http.post("/api/embed", json={"model": MODEL,
                                                     "input": batches[2][5]})).json()
    assert [len(got[r]) for r in range(4)] == [12] * 4
    assert got[2][5] == alone["embeddings"][0]
