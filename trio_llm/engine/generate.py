"""Token generation for one sequence: prompt eval, then sample-and-decode until a stop."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from trio_llm.engine.batch import Batch
from trio_llm.engine.model import Model
from trio_llm.engine.sampler import Sampler


def generate_tokens(model: Model, prompt: Sequence[int], sampler: Sampler, max_tokens: int,
                    slot: int = 0) -> Iterator[int]:
    """Yield sampled token ids; stops after an end-of-generation token or max_tokens."""
    if not prompt:
        raise ValueError("generation needs at least one prompt token")
    if len(prompt) + max_tokens > model.net.n_ctx:
        raise ValueError("prompt plus max_tokens exceed the context")
    logits = model.net.forward(Batch.sequence(prompt, 0, slot))[0]
    history = list(prompt)
    stops = model.tokenizer.stop_ids
    for _ in range(max_tokens):
        token = sampler.sample(logits, history)
        yield token
        if token in stops:
            return
        history.append(token)
        logits = model.net.forward(Batch.sequence([token], len(history) - 1, slot))[0]


def generate_text(model: Model, prompt: str, sampler: Sampler, max_tokens: int) -> str:
    """The continuation of `prompt` as text (end-of-generation tokens left out)."""
    ids = model.tokenizer.encode(prompt)
    out = [t for t in generate_tokens(model, ids, sampler, max_tokens)
           if t not in model.tokenizer.stop_ids]
    return model.tokenizer.decode(out)
