"""A loaded model: the GGUF file, its architecture's forward pass, tokenizer and thread pool."""

from __future__ import annotations

import os
from dataclasses import dataclass

from trio_llm.arch import architecture_for
from trio_llm.arch.llama import Llama
from trio_llm.engine.gguf_file import GGUFFile, read_gguf
from trio_llm.engine.kernels import Pool
from trio_llm.engine.tokenizer import Tokenizer


@dataclass
class Model:
    """Everything needed to turn tokens into logits for up to n_slots sequences at once."""

    gguf: GGUFFile
    net: Llama
    tokenizer: Tokenizer
    pool: Pool

    @classmethod
    def load(cls, path: str | os.PathLike[str], n_ctx: int = 4096, n_slots: int = 1,
             n_threads: int = 0, max_batch: int = 512, scalar: bool = False) -> Model:
        gguf = read_gguf(path)
        try:
            arch = architecture_for(str(gguf.metadata.get("general.architecture", "")))
            pool = Pool(n_threads, scalar=scalar)
            net = arch(gguf, pool, n_ctx=n_ctx, n_slots=n_slots, max_batch=max_batch)
            tokenizer = Tokenizer.from_metadata(gguf.metadata)
        except BaseException:
            gguf.close()
            raise
        return cls(gguf, net, tokenizer, pool)

    @property
    def weight_bytes(self) -> int:
        """Bytes of weights one decode step reads (every tensor except the embedding lookup)."""
        total = sum(t.nbytes for t in self.gguf.tensors.values())
        embd = self.gguf.tensors["token_embd.weight"].nbytes
        tied = self.net.output.name == self.net.token_embd.name  # read for the logits too
        return total if tied else total - embd

    def close(self) -> None:
        self.pool.close()
