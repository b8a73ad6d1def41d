"""Programs: recorded kernel calls replayed in one C call (csrc/program, engine/program.py).

A replay makes the recorded calls with the recorded pointers, so it computes what the calls
made one by one compute over the buffers' current contents, bit for bit; the first call that
fails stops it and is named. A network replays its decode steps from programs recorded once
per row count, and an architecture with a step that is not a kernel call (phi3's split of its
fused projection) runs call by call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.test_phi3 import tiny as phi3_tiny  # noqa: F401  (the tiny phi3 GGUF fixture)
from trio_llm.engine.batch import Batch
from trio_llm.engine.kernels import KernelError, ptr
from trio_llm.engine.model import Model
from trio_llm.engine.ops import MatmulPath, open_ops
from trio_llm.testing.tiny_gguf import F16


class Matrix:
    """An F16 weight as CpuOps.matmul takes it."""

    def __init__(self, values: np.ndarray, kind: int = F16) -> None:
        self.array = values.astype(np.float16)
        self.data = ptr(self.array, "void *")
        self.kind, self.n_out, self.n_in, self.name, self.packed = (
            int(kind), values.shape[0], values.shape[1], "w", None)


def fp(a: np.ndarray) -> object:
    return ptr(a, "float *")


def step(ops: object, w: Matrix, x: np.ndarray, y: np.ndarray, norm: np.ndarray) -> None:
    """A few kernels in a row, each reading what the one before wrote."""
    n = x.shape[0]
    ops.rmsnorm(fp(x), fp(norm), fp(x), n, x.shape[1], 1e-5)
    ops.matmul(w, fp(x), n, fp(y), MatmulPath.TILED)
    ops.gelu(fp(y), fp(y), y.size)
    ops.scale(fp(y), 0.5, y.size)
    ops.add(fp(y), fp(y), y.size)


def test_a_replay_computes_the_calls_one_by_one_over_the_buffers_current_contents() -> None:
    rng = np.random.default_rng(5)
    ops = open_ops(2)
    try:
        w = Matrix(rng.standard_normal((40, 64)))
        norm = rng.standard_normal(64).astype(np.float32)
        x, y = np.zeros((9, 64), np.float32), np.zeros((9, 40), np.float32)
        recorder = ops.recorder()
        step(recorder, w, x, y, norm)
        program = recorder.program
        assert len(program) == 5
        for _ in range(3):                  # new inputs in the same buffer each time
            start = rng.standard_normal((9, 64)).astype(np.float32)
            x[:] = start
            y[:] = 0
            program.run()
            replayed = y.copy()
            x[:] = start
            y[:] = 0
            step(ops, w, x, y, norm)
            assert np.array_equal(replayed.view(np.uint32), y.view(np.uint32))
    finally:
        ops.close()


def test_the_first_call_that_fails_stops_the_replay_and_is_named() -> None:
    ops = open_ops(1)
    try:
        w = Matrix(np.ones((8, 32)))
        w.kind, w.name = 99, "blk.0.broken"          # no such type: tl_matmul refuses it
        x, y = np.ones((2, 32), np.float32), np.zeros((2, 8), np.float32)
        recorder = ops.recorder()
        recorder.scale(fp(x), 2.0, x.size)
        recorder.matmul(w, fp(x), 2, fp(y), MatmulPath.TILED)
        recorder.scale(fp(x), 2.0, x.size)           # never made
        with pytest.raises(KernelError, match="matmul blk.0.broken: unsupported tensor type"):
            recorder.program.run()
        assert (x == 2.0).all()
    finally:
        ops.close()


def decode_steps(path: Path, replay: bool) -> tuple[list[np.ndarray], Model]:
    """Prompts in two slots, then decode steps of one and of two rows; every logits row."""
    model = Model.load(path, n_ctx=256, n_threads=2, n_slots=2)
    model.net._replays = replay
    f = model.net.forward
    out = [f(Batch.sequence(list(range(100, 117)), 0, 0)),
           f(Batch.sequence(list(range(300, 311)), 0, 1))]
    for i in range(6):
        out.append(f(Batch.decode(400 + i, 17 + i, 0)))
    for i in range(6):
        out.append(f(Batch.join([Batch.decode(500 + i, 23 + i, 0),
                                 Batch.decode(600 + i, 11 + i, 1)])))
    return out, model


def test_decode_steps_replayed_have_the_bits_of_the_calls_one_by_one(smollm2_path: Path) -> None:
    direct, _ = decode_steps(smollm2_path, replay=False)
    replayed, model = decode_steps(smollm2_path, replay=True)
    assert sorted(model.net._programs) == [1, 2]      # one recording per row count
    for a, b in zip(direct, replayed, strict=True):
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_an_architecture_with_a_step_that_is_no_kernel_runs_call_by_call(phi3_tiny) -> None:  # noqa: F811
    direct, _ = decode_steps(phi3_tiny.path, replay=False)
    replayed, model = decode_steps(phi3_tiny.path, replay=True)
    assert not model.net._replays and not model.net._programs
    for a, b in zip(direct, replayed, strict=True):
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
