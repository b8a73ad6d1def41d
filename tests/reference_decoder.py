"""Float64 building blocks of decoder-only transformers, and the checks every architecture's
test makes of our engine against a reference forward written from them.

Written from the definitions (RMSNorm, rotary embeddings in both pair orders, grouped-query
attention with a causal or sliding-window mask, SiLU), independent of the engine's code. Each
architecture's test composes them into that architecture's forward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trio_llm.engine.batch import Batch
from trio_llm.engine.model import Model
from trio_llm.testing.tiny_gguf import TinyModel

Forward = Callable[[list[int]], np.ndarray]   # tokens from position 0 -> logits [n][vocab]

# Prompt rows take ~15-bit activations and land near 2e-4 on these models; decode rows take
# int8 activations, ~0.5% of noise per matmul on random weights (whose logits, unlike a trained
# model's, have no large common part to hide it), so a decode step lands near 1%.
PROMPT_TOLERANCE = 1e-2
DECODE_TOLERANCE = 3e-2
# A top-1 comparison means something only where the reference's best two logits are further
# apart than the error allowed (the logits of these models have a standard deviation near 8).
MIN_MARGIN = 0.5

# 20 tokens of SmolLM2's vocabulary ("The capital of France is Paris. The capital of ...").
PROMPT_20 = [504, 3575, 282, 4649, 314, 7042, 30, 378, 3575, 282, 6171, 314, 8158, 30, 378,
             3575, 282, 7044, 314, 260]
OTHER_PROMPT = [1670, 17025, 24, 106, 2400, 198, 2, 1232, 312, 1147, 29]


@dataclass(frozen=True)
class Tiny:
    """A tiny model's file and its tensors as the file holds them, in float64 ([rows][cols])."""

    path: Path
    w: dict[str, np.ndarray]

    @classmethod
    def write(cls, model: TinyModel, path: Path) -> Tiny:
        return cls(model.write(path), model.stored())

    def block(self, i: int) -> dict[str, np.ndarray]:
        """Block i's tensors by their name within it (`attn_q.weight`)."""
        prefix = f"blk.{i}."
        return {k.removeprefix(prefix): v for k, v in self.w.items() if k.startswith(prefix)}


def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """x / rms(x) * w over the last axis (per head when x is [n][heads][head_dim])."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x: np.ndarray, n_rot: int, base: float, *, neox: bool, factors: np.ndarray | None = None,
         attn_factor: float = 1.0) -> np.ndarray:
    """Rotate the first n_rot dims of each head of x [n][heads][head_dim] at positions 0..n-1.

    Pair i turns by pos * base^(-2i/n_rot) / factors[i]; NeoX order pairs dims (i, i + n_rot/2),
    the normal order (2i, 2i + 1). LongRoPE's attention factor scales the rotated dims."""
    half = n_rot // 2
    inv_freq = float(base) ** (-np.arange(half) * 2.0 / n_rot)
    if factors is not None:
        inv_freq = inv_freq / factors
    angle = np.arange(x.shape[0], dtype=np.float64)[:, None] * inv_freq[None, :]
    cos, sin = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
    if neox:
        a, b = x[..., :half], x[..., half:n_rot]
    else:
        a, b = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
    ra, rb = (a * cos - b * sin) * attn_factor, (a * sin + b * cos) * attn_factor
    out = x.copy()
    if neox:
        out[..., :half], out[..., half:n_rot] = ra, rb
    else:
        out[..., 0:n_rot:2], out[..., 1:n_rot:2] = ra, rb
    return out


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, window: int = 0) -> np.ndarray:
    """Causal grouped-query attention: q [n][heads][hd], k and v [n][kv_heads][hd] -> [n][heads
    * hd]. Query head h reads KV head h // (heads / kv_heads); with a window, position i sees
    positions j with i - window < j <= i."""
    n, n_head, hd = q.shape
    group = n_head // k.shape[1]
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    hidden = (j > i) | ((i - j >= window) if window else False)
    mask = np.where(hidden, -np.inf, 0.0)
    out = np.empty((n, n_head, hd))
    for h in range(n_head):
        scores = q[:, h] @ k[:, h // group].T / np.sqrt(hd) + mask
        p = np.exp(scores - scores.max(axis=1, keepdims=True))
        out[:, h] = (p / p.sum(axis=1, keepdims=True)) @ v[:, h // group]
    return out.reshape(n, n_head * hd)


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def top2_margin(logits: np.ndarray) -> float:
    """How far the best logit leads the second."""
    best = np.sort(logits)[-2:]
    return float(best[1] - best[0])


# -- the checks of acceptance 1, for any architecture ---------------------------------------------
def check_prompt(model: Model, reference: Forward, prompt: list[int] = PROMPT_20) -> None:
    """The last position's logits of a prompt: within 1e-2 relative L2, the same top-1."""
    want = reference(prompt)[-1]
    got = model.net.forward(Batch.sequence(prompt, slot=0))[0]
    assert relative_error(got, want) < PROMPT_TOLERANCE
    assert top2_margin(want) > MIN_MARGIN
    assert int(np.argmax(got)) == int(np.argmax(want))


def check_decode_step(model: Model, reference: Forward, prompt: list[int] = PROMPT_20) -> None:
    """A decode step after the prompt (the int8 decode path) matches the reference's next
    position. The step feeds the first of the reference's likeliest next tokens after which
    its own top two are clearly apart, so that the top-1 comparison means something."""
    likeliest = np.argsort(reference(prompt)[-1])[::-1][:8]
    token, want = next((int(t), logits) for t in likeliest
                       if top2_margin(logits := reference([*prompt, int(t)])[-1]) > MIN_MARGIN)
    model.net.forward(Batch.sequence(prompt, slot=0))
    got = model.net.forward(Batch.decode(token, len(prompt), slot=0))[0]
    assert relative_error(got, want) < DECODE_TOLERANCE
    assert int(np.argmax(got)) == int(np.argmax(want))


def check_batch_of_two(model: Model, a: list[int] = PROMPT_20, b: list[int] = OTHER_PROMPT
                       ) -> None:
    """Two sequences in one batch give each one's logits alone, bit for bit."""
    alone_a = model.net.forward(Batch.sequence(a, slot=0, all_logits=True))
    alone_b = model.net.forward(Batch.sequence(b, slot=1, all_logits=True))
    both = model.net.forward(Batch.join([Batch.sequence(a, slot=0, all_logits=True),
                                         Batch.sequence(b, slot=1, all_logits=True)]))
    assert np.array_equal(both[: len(a)], alone_a)
    assert np.array_equal(both[len(a):], alone_b)
