"""gemma3 on the real Gemma 3 270M file (Q4_K_M), against a float64 numpy reference."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import trio

from tests.reference_gemma3 import ReferenceGemma3
from trio_llm.engine.batch import Batch
from trio_llm.engine.model import Model
from trio_llm.engine.tokenizer import Tokenizer
from trio_llm.store.progress import drain
from trio_llm.store.store import Store

# The second real model (Gemma 3 270M, not the small SmolLM2): the fast tier's costliest file.
pytestmark = pytest.mark.full

TEXT = ("The quick brown fox jumps over the lazy dog while the cat watches from the old "
        "wooden fence near the river bank")


@pytest.fixture(scope="module")
def reference(gemma3_path: Path) -> ReferenceGemma3:
    return ReferenceGemma3(gemma3_path)


@pytest.fixture(scope="module")
def model(gemma3_path: Path) -> Model:
    return Model.load(gemma3_path, n_ctx=2048, n_slots=2, n_threads=2)


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def prompt_20(tokenizer: Tokenizer) -> list[int]:
    ids = tokenizer.encode(TEXT)[:20]
    assert len(ids) == 20 and ids[0] == tokenizer.bos_id
    return ids


@pytest.mark.parametrize("scalar", [False, True], ids=["simd", "scalar"])
def test_last_logits_of_20_tokens_match_float64_reference(
        gemma3_path: Path, model: Model, reference: ReferenceGemma3, scalar: bool) -> None:
    ids = prompt_20(model.tokenizer)
    net = model if not scalar else Model.load(gemma3_path, n_ctx=64, n_threads=2, scalar=True)
    got = net.net.forward(Batch.sequence(ids))[0]
    want = reference.forward(ids)[-1]
    assert relative_error(got, want) < 1e-2
    assert int(np.argmax(got)) == int(np.argmax(want))


def test_decode_steps_continue_the_prompt_as_one_batch_does(model: Model) -> None:
    """Decode rows take int8 activations (the prompt's take ~15-bit ones): a few percent
    apart over 18 layers, as on SmolLM2, with the same most likely token."""
    ids = prompt_20(model.tokenizer)
    whole = model.net.forward(Batch.sequence(ids, slot=1, all_logits=True))
    model.net.forward(Batch.sequence(ids[:15], slot=0))
    for pos in range(15, 20):
        step = model.net.forward(Batch.decode(ids[pos], pos, slot=0))[0]
        assert relative_error(step, whole[pos]) < 0.08
        assert int(np.argmax(step)) == int(np.argmax(whole[pos]))


def test_a_prompt_longer_than_the_window_runs_and_local_layers_keep_only_the_window(
        model: Model, reference: ReferenceGemma3) -> None:
    """1,500 tokens: past the 512-position window of the local layers, whose caches are rings
    of window + max_batch - 1 rows, while the global layers keep the whole context."""
    p = model.net.params
    words = (TEXT + ". ").split()
    ids = [model.tokenizer.bos_id or 2]
    while len(ids) < 1500:
        ids += model.tokenizer.encode(" " + words[len(ids) % len(words)], add_special=False)
    ids = ids[:1500]
    got = model.net.forward(Batch.sequence(ids))[0]
    want = reference.forward(ids)[-1]
    assert relative_error(got, want) < 1e-2
    assert int(np.argmax(got)) == int(np.argmax(want))
    ring = p.window + model.net.max_batch - 1
    kv_dim = p.heads.n_kv_head * p.heads.head_dim
    for i, layer in enumerate(model.net.cache.layers):
        assert layer.n_cache == (model.net.n_ctx if p.is_global[i] else ring)
        assert layer.window == (0 if p.is_global[i] else p.window)
    n_global = sum(p.is_global)
    row_bytes = 2 * kv_dim * 2 * model.net.n_slots          # keys + values, f16
    assert model.net.kv_bytes == row_bytes * (n_global * model.net.n_ctx
                                              + (p.n_layer - n_global) * ring)


def test_gemma_tokenizer_matches_sentencepiece_on_its_own_vocabulary(
        gemma3_path: Path, model: Model) -> None:
    """The GGUF's pieces, scores and types as a SentencePiece BPE model with byte fallback
    (Gemma's: no dummy prefix, whitespace as ▁, user-defined runs of newlines and spaces)."""
    from gguf import GGUFReader
    spm_lib = pytest.importorskip("sentencepiece")
    model_pb2 = pytest.importorskip("sentencepiece.sentencepiece_model_pb2")
    fields = GGUFReader(gemma3_path).fields
    proto = model_pb2.ModelProto()
    for piece, kind, score in zip(fields["tokenizer.ggml.tokens"].contents(),
                                  fields["tokenizer.ggml.token_type"].contents(),
                                  fields["tokenizer.ggml.scores"].contents(), strict=True):
        entry = proto.pieces.add()
        entry.piece, entry.type, entry.score = piece, kind, score
    proto.trainer_spec.model_type = model_pb2.TrainerSpec.BPE
    proto.trainer_spec.byte_fallback = True
    proto.trainer_spec.unk_id, proto.trainer_spec.bos_id, proto.trainer_spec.eos_id = 3, 2, 1
    proto.trainer_spec.pad_id = 0
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = False
    proto.normalizer_spec.remove_extra_whitespaces = False
    proto.normalizer_spec.escape_whitespaces = True
    oracle = spm_lib.SentencePieceProcessor(model_proto=proto.SerializeToString())
    texts = [TEXT, "  two  spaces\tand a tab\n\nthen lines\n\n\n", "naïve café über 東京 🚀",
             "def f(x):\n    return x ** 2  # square", "Ünïcödé?!... 12345 3.14159",
             "\u200b zero width \x00 nul \ufeff bom", "<start_of_turn>user literal text"]
    for text in texts:
        assert model.tokenizer.encode(text, add_special=False, parse_special=False) == \
            oracle.encode(text), text
        assert model.tokenizer.decode(model.tokenizer.encode(text, add_special=False,
                                                             parse_special=False)) == text


def test_gemma_turn_markers_are_single_control_tokens_that_end_a_turn(model: Model) -> None:
    tok = model.tokenizer
    ids = tok.encode("<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n")
    assert ids[:2] == [tok.bos_id, 105] and 106 in ids
    assert 106 in tok.eot_ids and tok.eos_id in tok.eot_ids


def greedy_reference(reference: ReferenceGemma3, ids: list[int], n: int
                     ) -> list[tuple[int, float]]:
    """The reference's greedy tokens, each with its top-2 logit margin."""
    out: list[tuple[int, float]] = []
    for _ in range(n):
        logits = reference.forward(ids + [t for t, _ in out])[-1]
        top2 = np.sort(logits)[-2:]
        out.append((int(np.argmax(logits)), float(top2[1] - top2[0])))
    return out


async def test_greedy_generation_over_http_follows_the_float64_reference(
        nursery: trio.Nursery, tmp_path: Path, gemma3_path: Path, model: Model,
        reference: ReferenceGemma3) -> None:
    """gemma3:270m from the catalog, raw /api/generate at temperature 0: the text of the
    reference's first 8 greedy tokens, up to the first step where the reference itself
    hesitates (top-2 margin at most 0.1, where float rounding may pick either)."""
    from tests.e2e.conftest import start

    drain(Store(tmp_path).pull("gemma3:270m", source=gemma3_path))
    host, _ = await start(nursery, tmp_path)
    text = "The capital of France is"
    async with httpx.AsyncClient(base_url=host.url, timeout=300) as http:
        r = await http.post("/api/generate", json={
            "model": "gemma3:270m", "prompt": text, "raw": True, "stream": False,
            "options": {"temperature": 0, "num_predict": 8}})
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        show = (await http.post("/api/show", json={"model": "gemma3:270m"})).json()
    assert body["done_reason"] == "length" and body["eval_count"] == 8
    prompt = model.tokenizer.encode(text)
    want = await trio.to_thread.run_sync(partial(greedy_reference, reference, prompt, 8))
    tokens = [t for t, _ in want]
    agreed = 8
    for step in range(8):
        if not body["response"].startswith(model.tokenizer.decode(tokens[: step + 1])):
            agreed = step
            assert want[step][1] <= 0.1, f"step {step} differs with margin {want[step][1]}"
            break
    assert body["response"].startswith(model.tokenizer.decode(tokens[:agreed]))
    if agreed == 8:
        assert body["response"] == model.tokenizer.decode(tokens)
    assert show["model_info"]["general.architecture"] == "gemma3"
    assert "completion" in show["capabilities"]
