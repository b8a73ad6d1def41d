"""Token generation for one sequence, on the same plan/apply steps the runner batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from trio_llm.engine import slots
from trio_llm.engine.model import Model
from trio_llm.engine.sampler import Sampler


def generate_tokens(model: Model, prompt: Sequence[int], sampler: Sampler,
                    max_tokens: int) -> Iterator[int]:
    """Yield sampled token ids; the last is an end-of-generation token or the max_tokens-th."""
    table = slots.SlotTable(1, model.net.n_ctx, model.net.max_batch)
    seq = slots.Sequence(list(prompt), sampler, max_tokens, model.tokenizer.eot_ids)
    table.add(seq)
    while (plan := table.plan()) is not None:
        for event in table.apply(plan, model.net.forward(plan.batch)):
            yield event.token


def generate_text(model: Model, prompt: str, sampler: Sampler, max_tokens: int) -> str:
    """The continuation of `prompt` as text (end-of-generation tokens left out)."""
    ids = model.tokenizer.encode(prompt)
    out = [t for t in generate_tokens(model, ids, sampler, max_tokens)
           if t not in model.tokenizer.eot_ids]
    return model.tokenizer.decode(out)
