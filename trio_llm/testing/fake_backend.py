"""A deterministic in-memory Backend for API tests: a pretend store and a pretend scheduler.

The "model" streams the rendered prompt's words back, one word per token, honouring
num_predict (done_reason "length") and stop strings, with real measured durations. Asked to
think, it first writes a line of thinking in `<think>` tags; offered tools, it ends by writing
a call of the first one in `<tool_call>` tags (the API reads both out of the text). Generations,
embeddings and loads wait for one of `num_parallel` slots, with the real scheduler's queue rule:
a request that cannot start at once (no free slot, or its model not loaded) is QueueFull (503
with Retry-After) when `max_queue` requests are waiting already, every waiting request counted.
Everything a test may want to observe is a plain attribute.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import trio

from trio_llm.api.backend import (
    EmbedResult,
    GenerationChunk,
    GenerationRequest,
    ModelEntry,
    ModelRef,
    RunningModel,
)
from trio_llm.engine.tokenizer import Tokenizer
from trio_llm.errors import (
    BadRequest,
    ContextOverflow,
    DigestMismatch,
    InvalidName,
    ModelNotFound,
    QueueFull,
    TrioLLMError,
    Unsupported,
)

# A readable transcript template, so echoed output is easy to assert on.
TRANSCRIPT_TEMPLATE = (
    "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
FIM_TEMPLATE = (
    "{# the model writes a call as <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call>"
    " #}{% if suffix %}<prefix>{{ prompt }}<suffix>{{ suffix }}<middle>{% else %}"
    + TRANSCRIPT_TEMPLATE + "{% endif %}"
)
THINKING = "The user wants an echo."
EMBED_DIM = 8
FOREVER = timedelta(days=365 * 100)
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*){0,2}(:[a-z0-9][a-z0-9._-]*)?")
_DEFAULT_PREFIXES = ("registry.ollama.ai/library/", "library/")


def canonical(name: str) -> str:
    """Ollama-style short name: lower case, ':latest' added, default host/namespace dropped."""
    text = name.strip().lower()
    if not _NAME.fullmatch(text):
        raise InvalidName(name)
    for prefix in _DEFAULT_PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix):]
    if ":" not in text.rsplit("/", 1)[-1]:
        text += ":latest"
    return text


def token_id(word: str) -> int:
    return zlib.crc32(word.encode()) % 49152


@dataclass
class FakeModel:
    ref: ModelRef
    size: int = 1_000_000
    modified_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    license: str = ""


@dataclass
class Loaded:
    model: FakeModel
    expires_at: datetime
    context_length: int


def default_models() -> list[FakeModel]:
    details = {"parent_model": "", "format": "gguf", "family": "fake", "families": ["fake"],
               "parameter_size": "1M", "quantization_level": "Q4_1"}
    base = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        FakeModel(ModelRef(name="fake:latest", digest=hashlib.sha256(b"fake").hexdigest(),
                           template=FIM_TEMPLATE, details=details,
                           capabilities=("completion", "tools", "insert", "embedding",
                                         "thinking"),
                           modified_at=base + timedelta(days=2)),
                  modified_at=base + timedelta(days=2), license="MIT"),
        FakeModel(ModelRef(name="plain:latest", digest=hashlib.sha256(b"plain").hexdigest(),
                           details=details, capabilities=("completion",),
                           modified_at=base + timedelta(days=1)),
                  modified_at=base + timedelta(days=1)),
        FakeModel(ModelRef(name="embedder:latest",
                           digest=hashlib.sha256(b"embedder").hexdigest(), details=details,
                           capabilities=("embedding",), modified_at=base), modified_at=base),
    ]


class FakeBackend:
    """Store and scheduler in memory (implements trio_llm.api.backend.Backend)."""

    def __init__(self, *, token_delay: float = 0.0, load_delay: float = 0.0,
                 num_parallel: int = 4, max_queue: int = 512, num_ctx: int = 4096) -> None:
        self.token_delay = token_delay
        self.load_delay = load_delay
        self.num_ctx = num_ctx
        self.max_queue = max_queue
        self.models: dict[str, FakeModel] = {m.ref.name: m for m in default_models()}
        self.registry: dict[str, FakeModel] = {
            "tiny:latest": FakeModel(replace(self.models["plain:latest"].ref, name="tiny:latest"))
        }
        self.blobs: dict[str, bytes] = {}
        self.loaded: dict[str, Loaded] = {}
        self.slots = trio.Semaphore(num_parallel)
        self.waiting = 0
        self.active = 0
        self.outcomes: list[str] = []  # per generation: "finished" or "closed" (cancelled)
        self.requests: list[GenerationRequest] = []  # every generation asked for
        self.fail_after: int | None = None  # raise after this many chunks (mid-stream errors)
        self.pause_at: int | None = None  # before this token, wait for `resume` to be set
        self.paused = trio.Event()  # set when a generation reaches pause_at
        self.resume = trio.Event()

    # ------------------------------------------------------------------ store

    def _get(self, name: str) -> FakeModel:
        key = canonical(name)
        if key not in self.models:
            raise ModelNotFound(name)
        return self.models[key]

    async def list_models(self) -> Sequence[ModelEntry]:
        return [ModelEntry(name=n, modified_at=m.modified_at, size=m.size, digest=m.ref.digest,
                           details=m.ref.details, capabilities=m.ref.capabilities)
                for n, m in self.models.items()]

    async def resolve(self, name: str) -> ModelRef:
        return self._get(name).ref

    async def tokenizer(self, model: ModelRef) -> Tokenizer:
        """The fake models have no vocabulary: tokenize and count_tokens say so (400)."""
        raise Unsupported(f'"{model.name}" has no tokenizer (a fake model)')

    async def show(self, name: str, verbose: bool) -> Mapping[str, Any]:
        model = self._get(name)
        ref = model.ref
        parameters = "\n".join(f"{k:<30} {v!r}" for k, v in ref.parameters.items())
        info: dict[str, Any] = {"general.architecture": "fake", "fake.context_length": 4096,
                                "fake.embedding_length": EMBED_DIM}
        if verbose:
            info["tokenizer.ggml.tokens"] = ["<s>", "</s>", "hello"]
        return {"license": model.license,
                "modelfile": f"# Modelfile generated by \"ollama show\"\nFROM {ref.name}\n",
                "parameters": parameters, "template": ref.template, "system": ref.system,
                "details": dict(ref.details), "model_info": info,
                "capabilities": list(ref.capabilities),
                "modified_at": model.modified_at.isoformat()}

    async def copy(self, source: str, destination: str) -> None:
        try:
            model = self._get(source)
        except ModelNotFound:
            raise ModelNotFound(source, f'model "{source}" not found') from None
        target = canonical(destination)
        self.models[target] = replace(model, ref=replace(model.ref, name=target),
                                      modified_at=datetime.now(UTC))

    async def delete(self, name: str) -> None:
        key = canonical(name)
        if key not in self.models:
            raise ModelNotFound(name)
        del self.models[key]
        self.loaded.pop(key, None)

    async def blob_exists(self, digest: str) -> bool:
        return digest in self.blobs

    async def write_blob(self, digest: str, chunks: AsyncIterator[bytes]) -> None:
        hasher = hashlib.sha256()
        data = bytearray()
        async for chunk in chunks:
            hasher.update(chunk)
            data += chunk
        got = "sha256:" + hasher.hexdigest()
        if got != digest:
            raise DigestMismatch(digest, got)
        self.blobs[digest] = bytes(data)

    async def create(self, request: Mapping[str, Any]) -> AsyncIterator[Mapping[str, Any]]:
        name = canonical(str(request.get("model", "")))
        source, files = request.get("from"), request.get("files")
        if source:
            base = self._get(str(source))
        elif isinstance(files, dict) and files:
            for digest in files.values():
                if digest not in self.blobs:
                    raise BadRequest(f"blob {digest} not found")
            base = self.models["plain:latest"]
        else:
            raise BadRequest("neither 'from' or 'files' was specified")
        yield {"status": f"using existing layer sha256:{base.ref.digest}"}
        params = dict(base.ref.parameters)
        params.update(request.get("parameters") or {})
        ref = replace(base.ref, name=name, parameters=params,
                      system=request.get("system", base.ref.system),
                      template=request.get("template", base.ref.template),
                      digest=hashlib.sha256(name.encode()).hexdigest())
        yield {"status": "writing manifest"}
        self.models[name] = FakeModel(ref, modified_at=datetime.now(UTC))
        yield {"status": "success"}

    async def pull(self, name: str, *, insecure: bool) -> AsyncIterator[Mapping[str, Any]]:
        key = canonical(name)
        yield {"status": "pulling manifest"}
        if key not in self.registry:
            raise TrioLLMError("pull model manifest: file does not exist")
        digest = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
        for completed in (0, 500_000, 1_000_000):
            yield {"status": f"pulling {digest[7:19]}", "digest": digest, "total": 1_000_000,
                   "completed": completed}
            await trio.sleep(0)
        yield {"status": "verifying sha256 digest"}
        yield {"status": "writing manifest"}
        self.models[key] = replace(self.registry[key], modified_at=datetime.now(UTC))
        yield {"status": "success"}

    async def push(self, name: str, *, insecure: bool) -> AsyncIterator[Mapping[str, Any]]:
        model = self._get(name)
        yield {"status": "retrieving manifest"}
        yield {"status": "starting upload", "digest": "sha256:" + model.ref.digest,
               "total": model.size, "completed": model.size}
        yield {"status": "pushing manifest"}
        yield {"status": "success"}

    # -------------------------------------------------------------- scheduler

    def _expiry(self, keep_alive: float | None, current: Loaded | None) -> datetime:
        if keep_alive is None:
            return current.expires_at if current else datetime.now(UTC) + timedelta(minutes=5)
        if math.isinf(keep_alive):
            return datetime.now(UTC) + FOREVER
        return datetime.now(UTC) + timedelta(seconds=keep_alive)

    async def _ensure_loaded(self, ref: ModelRef, options: Mapping[str, Any],
                             keep_alive: float | None) -> int:
        """Load if needed; the nanoseconds it took."""
        began = time.monotonic_ns()
        key = ref.name
        current = self.loaded.get(key)
        if current is None:
            await trio.sleep(self.load_delay)
        model = self.models.get(key) or FakeModel(ref)
        self.loaded[key] = Loaded(model, self._expiry(keep_alive, current),
                                  int(options.get("num_ctx", self.num_ctx)))
        return time.monotonic_ns() - began

    async def load(self, model: ModelRef, options: Mapping[str, Any],
                   keep_alive: float | None) -> None:
        async with self._slot(model, options, keep_alive):
            pass

    async def unload(self, model: ModelRef) -> None:
        self.loaded.pop(model.name, None)

    async def ps(self) -> Sequence[RunningModel]:
        return [RunningModel(name=k, size=v.model.size, digest=v.model.ref.digest,
                             expires_at=v.expires_at, size_vram=0,
                             context_length=v.context_length, details=v.model.ref.details)
                for k, v in self.loaded.items()]

    def queue_depth(self) -> int:
        return self.waiting

    def busy_slots(self) -> int:
        return self.active

    @asynccontextmanager
    async def _slot(self, ref: ModelRef, options: Mapping[str, Any],
                    keep_alive: float | None) -> AsyncIterator[int]:
        """Hold a slot with `ref` loaded for the body; yields the load's nanoseconds. Waiting
        (for a slot or for the load) counts against max_queue, as in the real scheduler."""
        if (self.slots.value == 0 or ref.name not in self.loaded) and \
                self.waiting >= self.max_queue:
            raise QueueFull()
        self.waiting += 1
        try:
            await self.slots.acquire()
            try:
                load_ns = await self._ensure_loaded(ref, options, keep_alive)
            except BaseException:
                self.slots.release()
                raise
        finally:
            self.waiting -= 1
        self.active += 1
        try:
            yield load_ns
        finally:
            self.active -= 1
            self.slots.release()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self.requests.append(request)
        outcome = "closed"
        try:
            async with self._slot(request.model, request.options, request.keep_alive) as load_ns:
                async with aclosing(self._generate(request, load_ns)) as chunks:
                    async for chunk in chunks:
                        yield chunk
            outcome = "finished"
        finally:
            self.outcomes.append(outcome)
            if request.keep_alive == 0:
                self.loaded.pop(request.model.name, None)

    async def _generate(self, request: GenerationRequest,
                        load_ns: int) -> AsyncIterator[GenerationChunk]:
        """The fake model's output for one request that holds its slot."""
        options = request.options
        began = time.monotonic_ns()
        words = request.prompt.split()
        prompt_ids = [*request.context, *(token_id(w) for w in words)]
        num_ctx = int(options.get("num_ctx", self.num_ctx))
        if len(prompt_ids) > num_ctx:
            raise ContextOverflow("the prompt is longer than the context length")
        await trio.sleep(0)
        prompt_ns = max(1, time.monotonic_ns() - began)
        limit = int(options.get("num_predict", -1))
        stops = list(options.get("stop", []))
        began = time.monotonic_ns()
        output_ids: list[int] = []
        text = ""
        reason = "stop"
        if request.think not in (None, False):
            yield GenerationChunk(text=f"<think>{THINKING}</think>")
        for index, word in enumerate(words):
            if 0 <= limit <= index or len(prompt_ids) + index >= num_ctx:
                reason = "length"
                break
            if self.fail_after is not None and index >= self.fail_after:
                raise RuntimeError("the fake model failed mid-stream")
            if index == self.pause_at:
                self.paused.set()
                await self.resume.wait()
            await trio.sleep(self.token_delay)
            piece = word if index == 0 else " " + word
            if any(s in text + piece for s in stops):
                break
            text += piece
            output_ids.append(token_id(word))
            yield GenerationChunk(text=piece)
        if request.tools:
            name = request.tools[0].get("function", {}).get("name", "")
            call = json.dumps({"name": name, "arguments": {"words": len(output_ids)}})
            yield GenerationChunk(text=f"<tool_call>{call}</tool_call>")
        yield GenerationChunk(
            done=True, done_reason=reason, prompt_eval_count=len(prompt_ids),
            prompt_eval_duration=prompt_ns, eval_count=len(output_ids),
            eval_duration=max(1, time.monotonic_ns() - began), load_duration=max(1, load_ns),
            context=prompt_ids + output_ids)

    async def embed(self, model: ModelRef, inputs: Sequence[str], *, truncate: bool,
                    options: Mapping[str, Any], keep_alive: float | None) -> EmbedResult:
        if "embedding" not in model.capabilities:
            raise BadRequest(f'"{model.name}" does not support embeddings')
        async with self._slot(model, options, keep_alive) as load_ns:
            return self._embed(model, inputs, truncate=truncate, options=options,
                               keep_alive=keep_alive, load_ns=load_ns)

    def _embed(self, model: ModelRef, inputs: Sequence[str], *, truncate: bool,
               options: Mapping[str, Any], keep_alive: float | None,
               load_ns: int) -> EmbedResult:
        num_ctx = int(options.get("num_ctx", self.num_ctx))
        vectors = []
        count = 0
        for text in inputs:
            words = text.split()
            if len(words) > num_ctx:
                if not truncate:
                    raise ContextOverflow("the input length exceeds the context length")
                words = words[:num_ctx]
            count += len(words)
            vector = [0.0] * EMBED_DIM
            for word in words:
                seed = token_id(word)
                for i in range(EMBED_DIM):
                    vector[i] += ((seed >> i) & 7) - 3.5
            vectors.append(vector)
        if keep_alive == 0:
            self.loaded.pop(model.name, None)
        return EmbedResult(embeddings=vectors, prompt_eval_count=count,
                           load_duration=max(1, load_ns))
