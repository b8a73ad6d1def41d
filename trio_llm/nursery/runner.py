"""The contracts between the scheduler and its collaborators: model lookup and runners.

The scheduler never imports the engine. It is handed a `ModelResolver` (name -> file and
defaults, from the store) and a `RunnerFactory` (estimate and load a model), and it drives the
`Runner`s the factory returns. Tests hand in the fakes from trio_llm.testing.fakes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from trio_llm.gpu.memory import MemoryEstimate
from trio_llm.gpu.placement import Placement
from trio_llm.options import Part, default, names


def _details() -> dict[str, Any]:
    return {"parent_model": "", "format": "gguf", "family": "", "families": None,
            "parameter_size": "", "quantization_level": ""}


@dataclass(frozen=True)
class ResolvedModel:
    """What the store knows about a model name.

    name: the display name (`smollm2:135m`), also the key of a loaded model. path: the GGUF file.
    digest: the manifest digest (hex) shown by ps. options: Modelfile PARAMETER defaults.
    context_length: the GGUF's training context (0 = unknown), which caps num_ctx.
    details: the /api/tags `details` object."""

    name: str
    path: Path
    digest: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    context_length: int = 0
    details: Mapping[str, Any] = field(default_factory=_details)


class ModelResolver(Protocol):
    """Turns a requested name into a ResolvedModel; raises errors.ModelNotFound."""

    async def resolve(self, name: str) -> ResolvedModel: ...


# Options that shape the loaded model; a request that changes one reloads it. Sampling options
# (temperature, top_k, ...) never do, and neither does num_thread: it applies when a request
# loads the model (capped at the physical cores), so no client can make the model reload for
# everyone by changing it.
LOAD_OPTIONS = names(Part.LOAD)


@dataclass(frozen=True)
class LoadSpec:
    """Everything that fixes how a model is loaded; equal `load_key`s share one runner.

    num_ctx is per slot (the KV cache holds num_ctx x n_slots positions). num_gpu -1 = auto.
    prompt_cache: bytes of earlier prompts' KV the model keeps for reuse (0: none)."""

    model: ResolvedModel
    num_ctx: int
    n_slots: int = 1
    num_batch: int = default("num_batch")
    num_gpu: int = default("num_gpu")
    main_gpu: int | None = default("main_gpu")
    num_thread: int = default("num_thread")
    use_mmap: bool | None = default("use_mmap")
    kv_cache_type: str = "f16"
    flash_attention: bool = False
    prefill_chunk: int = 0   # prompt tokens in a step that also decodes (0: num_batch)
    prompt_cache: int = 0

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def load_key(self) -> tuple[Any, ...]:
        return (self.model.path, self.model.digest, self.num_ctx, self.n_slots, self.num_batch,
                self.num_gpu, self.main_gpu, self.use_mmap, self.kv_cache_type,
                self.flash_attention, self.prompt_cache)


class Runner(Protocol):
    """One loaded model serving up to `n_slots` requests at once (continuous batching).

    Lifetime, all driven by the scheduler from the model's task in the scheduler nursery:
    `run()` is started right after load and cancelled at unload; `serve()` is called from the
    requests' own tasks, never more than `n_slots` at a time; `aclose()` comes last, after
    run() has ended and when no serve() is in flight, and frees the model's memory.
    """

    @property
    def n_slots(self) -> int:
        """Decode slots (OLLAMA_NUM_PARALLEL); the KV cache holds num_ctx x n_slots."""
        ...

    @property
    def memory(self) -> int:
        """Bytes the runner really holds (informational; placement uses the estimate)."""
        ...

    async def run(self) -> None:
        """The step loop: each step one batched forward over every active slot. Runs until
        cancelled; may simply sleep forever if the runner has no background work."""
        ...

    def serve(self, request: Any) -> AsyncIterator[Any]:
        """Generate for one request: an async generator of output chunks, iterated inside the
        request's own task and cancel scope (use contextlib.aclosing).

        Cancellation contract: when the consumer is cancelled (client gone) or stops iterating
        and closes the generator, the runner must release the request's slot before the
        generator finishes closing, so the next waiting request can take it. Errors raised
        here reach that request only."""
        ...

    async def aclose(self) -> None:
        """Free the model (weights, KV cache, threads). Called once, shielded from cancel."""
        ...


class RunnerFactory(Protocol):
    """Estimates and loads models (the engine implements it; tests use FakeRunnerFactory)."""

    def open_compute(self) -> AbstractAsyncContextManager[None]:
        """What every runner of this factory shares (the engine: one compute executor, so
        two busy models never run two kernel thread pools on the same cores), held for the
        body of the `async with`. The scheduler enters it before its nursery starts and leaves
        it after the last model has unloaded; loads happen only inside it."""
        ...

    async def estimate(self, spec: LoadSpec) -> MemoryEstimate:
        """Memory the model needs with this spec (read the GGUF header; run blocking I/O via
        trio.to_thread): the figure admission, eviction and ps use. The engine's is its
        network's own memory plan (trio_llm.arch.memory)."""
        ...

    async def load(self, spec: LoadSpec, placement: Placement) -> Runner:
        """Load the model (blocking work via trio.to_thread). The placement says which layers
        the scheduler put on which GPU; a CPU-only engine may ignore it. May be cancelled
        (OLLAMA_LOAD_TIMEOUT, shutdown): clean up what was allocated."""
        ...
