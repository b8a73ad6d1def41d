"""What the HTTP layer needs from the model store and the scheduler, as small Protocols.

The routes only ever talk to a `Backend` (both halves in one object). The integrator implements
it over the real store and scheduler; tests use trio_llm.testing.fake_backend. Errors are the
types in trio_llm.errors (ModelNotFound, InvalidName, QueueFull, BadRequest, ...): raise them
and the API answers with the right status and Ollama's wording.

Conventions: durations are integer nanoseconds, keep_alive is seconds as a float (math.inf =
forever, 0 = unload right after the response, None = leave the model's current value, or
OLLAMA_KEEP_ALIVE for a model not yet loaded), timestamps are timezone-aware datetimes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from trio_llm.engine.constraint import Constraint
from trio_llm.engine.logprobs import TokenLogprob
from trio_llm.engine.tokenizer import Tokenizer


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: everything the API needs to render a prompt and ask for a generation."""

    name: str  # display name as the client should see it, e.g. "smollm2:135m"
    digest: str = ""  # hex sha256 of the manifest
    gguf_path: str = ""  # the model blob
    template: str = ""  # the template that renders (Go or Jinja); "" = Ollama's {{ .Prompt }}
    system: str = ""  # Modelfile SYSTEM
    parameters: Mapping[str, Any] = field(default_factory=dict)  # Modelfile PARAMETERs
    messages: Sequence[Mapping[str, Any]] = ()  # Modelfile MESSAGEs ({role, content})
    details: Mapping[str, Any] = field(default_factory=dict)  # Ollama's `details` object
    capabilities: Sequence[str] = ("completion",)  # "completion", "embedding", "tools", ...
    bos_token: str = ""  # text of the BOS token, for templates that write {{ bos_token }}
    eos_token: str = ""
    modified_at: datetime | None = None
    context_length: int = 0  # the GGUF's training context (0: unknown)


@dataclass(frozen=True)
class ModelEntry:
    """One row of /api/tags."""

    name: str  # "smollm2:135m"
    modified_at: datetime
    size: int  # bytes: layers + config
    digest: str  # hex sha256 of the manifest, no "sha256:" prefix
    details: Mapping[str, Any] = field(default_factory=dict)
    capabilities: Sequence[str] = ()  # as in /api/show


@dataclass(frozen=True)
class RunningModel:
    """One row of /api/ps."""

    name: str
    size: int  # bytes in memory (weights + KV cache + scratch)
    digest: str
    expires_at: datetime  # far future for keep_alive forever
    size_vram: int = 0
    context_length: int = 0
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GenerationRequest:
    """One completion for the scheduler. The prompt is final text: the API has rendered it."""

    model: ModelRef
    prompt: str  # tokenize with special tokens recognised; add BOS only if the model wants it
    options: Mapping[str, Any]  # validated options: request over Modelfile; defaults not filled
    keep_alive: float | None = None
    context: Sequence[int] = ()  # token ids from an earlier reply; they go before the prompt
    images: Sequence[bytes] = ()
    format: str | Mapping[str, Any] | None = None  # "json" or a JSON schema (as sent)
    raw: bool = False  # the prompt was not templated
    think: bool | str | None = None  # passed through
    tools: Sequence[Mapping[str, Any]] | None = None  # passed through (already in the prompt)
    # A chat's messages and the callable that renders a list of them (template, tools and all),
    # so a prompt too long for num_ctx can lose whole older messages; `prompt` is render(messages).
    messages: Sequence[Mapping[str, Any]] = ()
    render: Callable[[Sequence[Mapping[str, Any]]], str] | None = None
    truncate: bool = True  # False: a prompt that does not fit is a 400 (ContextOverflow)
    shift: bool = True  # at the end of the context: shift it (True) or stop ("length")
    # what the output must match: from `format`, `response_format` or the grammar/regex
    # options (api/constraints.py builds it), or set directly (json_schema_constraint)
    constraint: Constraint | None = None
    logprobs: bool = False  # report each output token's log-probability
    top_logprobs: int = 0  # ... and the N most likely tokens at each step (0..20)


@dataclass(frozen=True)
class GenerationChunk:
    """A piece of output. The last chunk has done=True, done_reason and the statistics."""

    text: str = ""
    thinking: str = ""  # reasoning text, when the scheduler separates it from the answer
    tool_calls: Sequence[Mapping[str, Any]] = ()  # parsed calls: {function: {name, arguments}}
    done: bool = False
    done_reason: str | None = None  # "stop" (EOS or a stop string) or "length"
    prompt_eval_count: int = 0  # prompt tokens evaluated (those the prompt cache held are not)
    prompt_cache_count: int = 0  # prompt tokens whose KV the prompt cache gave
    prompt_eval_duration: int = 0  # ns
    eval_count: int = 0
    eval_duration: int = 0  # ns
    load_duration: int = 0  # ns spent waiting for the model to be ready
    context: Sequence[int] | None = None  # final chunk: prompt + output token ids
    truncated_messages: int = 0  # older messages dropped to fit num_ctx (on every chunk)
    logprobs: Sequence[TokenLogprob] = ()  # this chunk's tokens, when the request asked
    stop_sequence: str = ""  # final chunk: the stop string that ended the answer, if one did


@dataclass(frozen=True)
class EmbedResult:
    """Raw (not normalised) vectors, one per input, and what it cost."""

    embeddings: Sequence[Sequence[float]]   # (numpy float32 arrays from the engine)
    prompt_eval_count: int = 0  # total input tokens
    load_duration: int = 0  # ns
    truncated_inputs: Sequence[int] = ()  # indices of inputs cut to the context


class ModelStore(Protocol):
    """The model store side: names, manifests and blobs under OLLAMA_MODELS."""

    async def list_models(self) -> Sequence[ModelEntry]:
        """Every local model (any order; the API sorts newest first)."""
        ...

    async def resolve(self, name: str) -> ModelRef:
        """The model for a client-given name; raises InvalidName or ModelNotFound."""
        ...

    async def tokenizer(self, model: ModelRef) -> Tokenizer:
        """The model's tokenizer (read from its file, without loading the model): what
        /api/tokenize, /api/detokenize and count_tokens use, the same the engine encodes
        prompts with."""
        ...

    async def show(self, name: str, verbose: bool) -> Mapping[str, Any]:
        """Ollama's /api/show object (license, modelfile, parameters, template, details,
        model_info, capabilities, modified_at as an RFC 3339 string...)."""
        ...

    async def copy(self, source: str, destination: str) -> None:
        """Copy a manifest; ModelNotFound(source, f'model "{source}" not found') if missing."""
        ...

    async def delete(self, name: str) -> None:
        """Remove a model (and unload it); ModelNotFound if missing."""
        ...

    async def blob_exists(self, digest: str) -> bool:
        """Whether blobs/sha256-<hex> exists; digest is already validated `sha256:<64 hex>`."""
        ...

    async def write_blob(self, digest: str, chunks: AsyncIterator[bytes]) -> None:
        """Store an upload; raise DigestMismatch (and keep nothing) if the bytes differ."""
        ...

    def create(self, request: Mapping[str, Any]) -> AsyncIterator[Mapping[str, Any]]:
        """Run /api/create with the request body as sent; yields {status, ...} ending with
        {"status": "success"}. Errors raised after the first yield become a stream error line."""
        ...

    def pull(self, name: str, *, insecure: bool) -> AsyncIterator[Mapping[str, Any]]:
        """Pull from a registry; yields {status, digest?, total?, completed?}."""
        ...

    def push(self, name: str, *, insecure: bool) -> AsyncIterator[Mapping[str, Any]]:
        """Push to a registry; yields {status, digest?, total?, completed?}."""
        ...


class Inference(Protocol):
    """The inference side, implemented over the nursery scheduler: loaded models, the request
    queue, generation and embeddings."""

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Stream one generation. Raise QueueFull / ModelNotFound / BadRequest before the first
        chunk where possible (the API waits for the first chunk before it sends headers).
        The API closes the iterator (aclose) when the client goes: stop and free the slot."""
        ...

    async def load(self, model: ModelRef, options: Mapping[str, Any],
                   keep_alive: float | None) -> None:
        """Load (or keep) a model without generating: the empty-prompt preload."""
        ...

    async def unload(self, model: ModelRef) -> None:
        """Unload a model now (after its in-flight requests); no error if it is not loaded."""
        ...

    async def ps(self) -> Sequence[RunningModel]:
        """The loaded models (any order; the API sorts by expires_at, latest first)."""
        ...

    async def embed(self, model: ModelRef, inputs: Sequence[str], *, truncate: bool,
                    options: Mapping[str, Any], keep_alive: float | None) -> EmbedResult:
        """Embed each input. With truncate=False an input longer than the context raises
        ContextOverflow("the input length exceeds the context length: input I is N tokens,
        ..."); with truncate=True such inputs are cut and listed in truncated_inputs."""
        ...

    def queue_depth(self) -> int:
        """Requests waiting now, for a slot or for a load (for /metrics and /health)."""
        ...

    def busy_slots(self) -> int:
        """Decode slots serving a request now, over every loaded model (for /health)."""
        ...


class Backend(ModelStore, Inference, Protocol):
    """Everything the routes call: one object that is both the store and the scheduler."""
