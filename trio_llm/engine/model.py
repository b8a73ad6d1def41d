"""A loaded model: the GGUF file, its architecture's network, tokenizer and compute backend."""

from __future__ import annotations

import os
from dataclasses import dataclass

from trio_llm.arch import architecture_for
from trio_llm.arch.memory import MemoryPlan, plan_memory
from trio_llm.arch.runtime import Network
from trio_llm.arch.weights import WeightLoader
from trio_llm.engine.kernels import KernelError, Pool
from trio_llm.engine.ops import CpuOps, open_ops
from trio_llm.engine.tokenizer import Tokenizer
from trio_llm.errors import ModelFileError
from trio_llm.formats.gguf_file import GGUFFile, read_gguf
from trio_llm.options import default

ON_GPU = False  # CpuOps is the only compute backend: a loaded model never holds GPU memory


def check_model_file(gguf: GGUFFile) -> frozenset[str]:
    """Every check loading makes, without loading: a supported architecture whose
    hyper-parameters fit its tensors (names, shapes, types) and a tokenizer we implement.
    Raises ModelFileError (a 400) naming the first problem; returns the capabilities."""
    arch = architecture_for(str(gguf.metadata.get("general.architecture", "")))
    params = arch.read_params(gguf)
    arch.load_weights(WeightLoader(gguf), params)  # views into the mmap only
    Tokenizer.from_metadata(gguf.metadata)
    return arch.CAPABILITIES


def plan_model(path: str | os.PathLike[str], n_ctx: int, n_slots: int = 1,
               max_batch: int = default("num_batch"), kv_type: str = "f16",
               prompt_cache: int = 0) -> MemoryPlan:
    """The memory the model in `path` will hold once loaded with these options (Network's own
    plan), read from its header and tensor table without loading anything."""
    def plan(gguf: GGUFFile) -> MemoryPlan:  # the views into the mmap die with this frame
        arch = architecture_for(str(gguf.metadata.get("general.architecture", "")))
        params = arch.read_params(gguf)
        views = arch.load_weights(WeightLoader(gguf), params)
        return plan_memory(params.shape, views, gguf, n_ctx, n_slots, max_batch, kv_type,
                           prompt_cache)

    with read_gguf(path) as gguf:
        return plan(gguf)


@dataclass
class Model:
    """Everything needed to turn tokens into logits for up to n_slots sequences at once.

    `ops` is the compute backend; `owns_ops` says whether closing the model closes it (False
    when the server's compute executor lends one backend to every loaded model)."""

    gguf: GGUFFile
    net: Network
    tokenizer: Tokenizer
    ops: CpuOps
    owns_ops: bool = True

    @classmethod
    def load(cls, path: str | os.PathLike[str], n_ctx: int = default("num_ctx"), n_slots: int = 1,
             n_threads: int = 0, max_batch: int = default("num_batch"), scalar: bool = False,
             kv_type: str = "f16", ops: CpuOps | None = None,
             prompt_cache: int = 0) -> Model:
        """Load the model in `path`. With `ops`, it computes on that backend (owned by the
        caller, who serialises its use; n_threads and scalar are then the backend's own);
        without, it opens its own backend of n_threads and closes it with itself."""
        gguf = read_gguf(path)
        owned = ops is None
        try:
            arch = architecture_for(str(gguf.metadata.get("general.architecture", "")))
            tokenizer = Tokenizer.from_metadata(gguf.metadata)
            if ops is None:
                ops = open_ops(n_threads, scalar=scalar)
            try:
                net = Network(arch, gguf, ops, n_ctx=n_ctx, n_slots=n_slots,
                              max_batch=max_batch, kv_type=kv_type,
                              prompt_cache=prompt_cache)
            except KernelError as exc:  # the kernels refuse this file's tensors: a 400
                if "out of memory" in str(exc):
                    raise
                raise ModelFileError(f"the model cannot be loaded: {exc}") from exc
        except BaseException:
            if owned and ops is not None:
                ops.close()
            gguf.close()
            raise
        return cls(gguf, net, tokenizer, ops, owns_ops=owned)

    @property
    def capabilities(self) -> frozenset[str]:
        return self.net.arch.CAPABILITIES

    @property
    def pool(self) -> Pool:
        return self.ops.pool

    @property
    def weight_bytes(self) -> int:
        """Bytes of weights one decode step reads (every tensor except the embedding lookup)."""
        total = sum(t.nbytes for t in self.gguf.tensors.values())
        embd = self.gguf.tensors["token_embd.weight"].nbytes
        output = self.net.output
        tied = output is not None and output.name == self.net.token_embd.name
        return total if tied else total - embd

    def close(self) -> None:
        """Free the model's own resources (the backend too, unless it was lent)."""
        if self.owns_ops:
            self.ops.close()
