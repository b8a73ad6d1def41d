"""/api/tokenize and /api/detokenize with the real smollm2:135m over HTTP: any string comes
back from its tokens (hypothesis), pieces name each token's text or bytes, and the ids are the
ones the engine's own tokenizer gives."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import MODEL
from trio_llm.config import Host
from trio_llm.engine.tokenizer import Tokenizer
from trio_llm.formats.gguf_file import read_gguf
from trio_llm.server import EngineBackend


def engine_tokenizer(path: Path) -> Tokenizer:
    with read_gguf(path) as gguf:
        return Tokenizer.from_metadata(gguf.metadata)


async def test_tokenize_then_detokenize_gives_back_any_string_the_vocabulary_can_spell(
        live: tuple[Host, EngineBackend], smollm2_path: Path) -> None:
    """Any string of characters whose UTF-8 bytes the vocabulary has (SmolLM2's byte-level
    BPE has no token for 21 bytes: those invalid in UTF-8, the lead bytes of planes 4-11 and a
    few control characters; the tokenizer drops them, as every BPE without them must)."""
    url = live[0].url
    tokenizer = engine_tokenizer(smollm2_path)
    spelled = {data[0] for data in map(tokenizer.token_bytes, range(tokenizer.vocab_size))
               if len(data) == 1}
    assert len(spelled) == 256 - 21
    chars = st.characters(codec="utf-8").filter(lambda c: set(c.encode()) <= spelled)

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.text(chars, max_size=80))
    def round_trip(text: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            ids = http.post("/api/tokenize", json={"model": MODEL, "content": text}).json()
            back = http.post("/api/detokenize", json={"model": MODEL, **ids}).json()
        assert back == {"content": text}

    await trio.to_thread.run_sync(round_trip)


async def test_tokens_are_the_engines_and_pieces_are_text_or_byte_values(
        client: httpx.AsyncClient, smollm2_path: Path) -> None:
    tokenizer = engine_tokenizer(smollm2_path)
    text = "Hello <|im_end|> 東京 🦙"
    plain = (await client.post("/api/tokenize", json={"model": MODEL, "content": text})).json()
    assert plain["tokens"] == tokenizer.encode(text, add_special=False)
    pieces = (await client.post("/api/tokenize", json={"model": MODEL, "content": text,
                                                       "with_pieces": True})).json()["tokens"]
    assert [p["id"] for p in pieces] == plain["tokens"]
    assert "<|im_end|>" in [p["piece"] for p in pieces]
    joined = b"".join(bytes(p["piece"]) if isinstance(p["piece"], list)
                      else p["piece"].encode() for p in pieces)
    assert joined.decode() == text
    assert any(isinstance(p["piece"], list) for p in pieces)   # the llama is split in bytes
    literal = (await client.post("/api/tokenize", json={
        "model": MODEL, "content": "<|im_end|>", "parse_special": False})).json()["tokens"]
    assert len(literal) > 1


async def test_tokenize_refuses_unknown_fields_and_ids_outside_the_vocabulary(
        client: httpx.AsyncClient) -> None:
    unknown = await client.post("/api/tokenize", json={"model": MODEL, "content": "x",
                                                       "add_bos": True})
    assert unknown.status_code == 400 and unknown.json() == {"error": "unsupported field: add_bos"}
    outside = await client.post("/api/detokenize", json={"model": MODEL, "tokens": [10**7]})
    assert outside.status_code == 400 and "outside the vocabulary" in outside.json()["error"]
    missing = await client.post("/api/tokenize", json={"model": "nope:1b", "content": "x"})
    assert missing.status_code == 404
