"""Request parsing at the edge (types checked, Ollama's wording on failure) and response shapes.

Ollama is written in Go, so clients see Go's JSON decoder messages for wrong types:
`json: cannot unmarshal number into Go struct field GenerateRequest.prompt of type string`.
We produce the same words. A JSON null counts as absent, as it does in Go.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from quart import request

from trio_llm import config
from trio_llm.api.backend import GenerationChunk
from trio_llm.api.validation import check_depth, check_image
from trio_llm.config import parse_duration
from trio_llm.engine.logprobs import MAX_TOP_LOGPROBS, TokenLogprob
from trio_llm.errors import BadRequest, TrioLLMError
from trio_llm.options import OPTIONS, Kind

log = logging.getLogger(__name__)

THINK_LEVELS = ("high", "medium", "low", "max")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid character '{name[0]}' looking for beginning of value")


async def read_json() -> Any:
    """The request body as JSON, whatever the Content-Type (curl -d sends form-urlencoded).

    Empty: `missing request body`; malformed: worded like Go's decoder. Too large: 413."""
    data = await request.get_data(cache=False, as_text=False)
    if not data.strip():
        raise BadRequest("missing request body")
    try:
        body = json.loads(data, parse_constant=_reject_constant)
        check_depth(body)
        return body
    except RecursionError:
        raise BadRequest("request body nests arrays and objects too deeply") from None
    except UnicodeDecodeError:
        raise BadRequest("invalid character in request body: not UTF-8") from None
    except json.JSONDecodeError as exc:
        if exc.pos >= len(exc.doc.rstrip()):
            raise BadRequest("unexpected EOF") from None
        raise BadRequest(f"invalid character {exc.doc[exc.pos]!r} ({exc.msg.lower()})") from None
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def json_kind(value: Any) -> str:
    """The JSON type name Go's decoder uses in its messages."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


class Fields:
    """Typed reads of one JSON object's fields, raising Go-decoder-worded BadRequest."""

    def __init__(self, body: Any, struct: str) -> None:
        if not isinstance(body, dict):
            raise BadRequest(f"json: cannot unmarshal {json_kind(body)} into Go value of type "
                             f"api.{struct}")
        self.body: dict[str, Any] = body
        self.struct = struct

    def fail(self, key: str, value: Any, go_type: str) -> BadRequest:
        return BadRequest(f"json: cannot unmarshal {json_kind(value)} into Go struct field "
                          f"{self.struct}.{key} of type {go_type}")

    def get(self, key: str) -> Any:
        return self.body.get(key)

    def string(self, key: str, default: str = "") -> str:
        value = self.body.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self.fail(key, value, "string")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.body.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(key, value, "bool")
        return value

    def integer(self, key: str, default: int | None = None) -> int | None:
        value = self.body.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, value, "int")
        if isinstance(value, float) and not value.is_integer():
            raise BadRequest(f"json: cannot unmarshal number {value} into Go struct field "
                             f"{self.struct}.{key} of type int")
        return int(value)

    def number(self, key: str) -> float | None:
        value = self.body.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, value, "float32")
        return float(value)

    def obj(self, key: str, go_type: str = "map[string]interface {}") -> dict[str, Any]:
        value = self.body.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, value, go_type)
        return value

    def array(self, key: str, go_type: str) -> list[Any]:
        value = self.body.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(key, value, go_type)
        return value

    def strings(self, key: str) -> list[str]:
        values = self.array(key, "[]string")
        for value in values:
            if not isinstance(value, str):
                raise self.fail(key, value, "string")
        return values

    def ints(self, key: str) -> list[int]:
        values = self.array(key, "[]int")
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.fail(key, value, "int")
        return values

    def model(self) -> str:
        """`model`, or the legacy `name` some routes still accept."""
        return self.string("model") or self.string("name")


def default_truncate() -> bool:
    """`truncate` when a request leaves it out: true, as Ollama, unless OLLAMA_TRUNCATE=0."""
    return bool(config.get("OLLAMA_TRUNCATE"))


def parse_options(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Type-checked generation options (trio_llm.options is the table); unknown names and the
    legacy ones Ollama ignores are logged and dropped, as Ollama does."""
    options: dict[str, Any] = {}
    for key, value in raw.items():
        option = OPTIONS.get(key)
        if option is None or not option.in_requests:
            log.warning('invalid option provided: option="%s"', key)
            continue
        if value is None:
            continue
        options[key] = _coerce_option(key, value, option.kind)
    return options


def _coerce_option(key: str, value: Any, kind: Kind) -> Any:
    wrong = BadRequest(f'option "{key}" must be of type {kind.api}')
    if kind in (Kind.BOOL, Kind.STRING):
        if not isinstance(value, bool if kind is Kind.BOOL else str):
            raise wrong
        return value
    if kind is Kind.STRINGS:
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise wrong
        return list(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise wrong
    if kind is Kind.INT:
        if not math.isfinite(value):
            raise wrong
        return int(value)  # JSON numbers are accepted for integers, truncated
    return float(value)


def parse_keep_alive(value: Any) -> float | None:
    """keep_alive in seconds: a number of seconds or a Go duration; negative means forever."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadRequest(f"json: cannot unmarshal {json_kind(value)} into Go value of type "
                         "api.Duration")
    try:
        return parse_duration(value)
    except ValueError:
        raise BadRequest(f'time: invalid duration "{value}"') from None


def parse_think(value: Any) -> bool | str | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value in THINK_LEVELS:
        return value
    shown = f'"{value}"' if isinstance(value, str) else str(value)
    raise BadRequest(f'invalid think value: {shown} (must be "high", "medium", "low", "max", '
                     "true, or false)")


def parse_format(value: Any) -> str | dict[str, Any] | None:
    if value is None or value == "":
        return None
    if value == "json" or isinstance(value, dict):
        return value
    raise BadRequest(f"invalid format: {value!r}; expected \"json\" or a valid JSON Schema "
                     "object")


def parse_top_logprobs(value: int | None) -> int:
    """top_logprobs: how many of the most likely tokens to list at each step (0..20)."""
    if value is None:
        return 0
    if not 0 <= value <= MAX_TOP_LOGPROBS:
        raise BadRequest(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}")
    return value


def decode_images(images: Sequence[str]) -> list[bytes]:
    out = []
    for image in images:
        try:
            out.append(base64.b64decode(image, validate=True))
        except (binascii.Error, ValueError):
            raise BadRequest("illegal base64 data in images") from None
        check_image(out[-1], len(out) - 1)
    return out


@dataclass(frozen=True)
class Message:
    """One chat message, as Ollama accepts it."""

    role: str
    content: str = ""
    images: tuple[str, ...] = ()
    thinking: str = ""
    tool_calls: tuple[Mapping[str, Any], ...] = ()
    tool_name: str = ""
    tool_call_id: str = ""

    @classmethod
    def parse(cls, body: Any) -> Message:
        f = Fields(body, "ChatRequest.messages")
        return cls(role=f.string("role").lower(), content=f.string("content"),
                   images=tuple(f.strings("images")), thinking=f.string("thinking"),
                   tool_calls=tuple(f.array("tool_calls", "[]api.ToolCall")),
                   tool_name=f.string("tool_name"), tool_call_id=f.string("tool_call_id"))

    def for_template(self) -> dict[str, Any]:
        """The dict a chat template sees (only the fields that are set; Jinja templates also
        find Hugging Face's names `reasoning_content` and `name`)."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.thinking:
            out["thinking"] = self.thinking
            out["reasoning_content"] = self.thinking
        if self.tool_calls:
            out["tool_calls"] = list(self.tool_calls)
        if self.tool_name:
            out["tool_name"] = self.tool_name
            out["name"] = self.tool_name
        if self.tool_call_id:
            out["tool_call_id"] = self.tool_call_id
        return out


@dataclass(frozen=True)
class ToolChoice:
    """OpenAI's `tool_choice`: "auto" (the model decides), "none" (no tools offered),
    "required" (some call), or "function" with the one tool's `name`."""

    kind: str = "auto"
    name: str = ""

    @classmethod
    def parse(cls, value: Any) -> ToolChoice:
        if value is None or value == "auto":
            return cls()
        if value in ("none", "required"):
            return cls(value)
        if isinstance(value, dict) and value.get("type") == "function":
            function = value.get("function")
            name = function.get("name") if isinstance(function, dict) else None
            if isinstance(name, str) and name:
                return cls("function", name)
        raise BadRequest('invalid tool_choice: must be "none", "auto", "required" or '
                         '{"type": "function", "function": {"name": ...}}')


@dataclass(frozen=True)
class GenerateRequest:
    model: str
    prompt: str = ""
    suffix: str = ""
    system: str = ""
    template: str = ""
    context: tuple[int, ...] = ()
    raw: bool = False
    format: str | dict[str, Any] | None = None
    images: tuple[bytes, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    stream: bool = True
    keep_alive: float | None = None
    think: bool | str | None = None
    truncate: bool = True    # a prompt longer than num_ctx loses its earlier context (or 400)
    shift: bool = True       # at the end of the context: shift it, or stop with "length"
    logprobs: bool = False
    top_logprobs: int = 0

    @classmethod
    def parse(cls, body: Any) -> GenerateRequest:
        f = Fields(body, "GenerateRequest")
        return cls(model=f.string("model"), prompt=f.string("prompt"), suffix=f.string("suffix"),
                   system=f.string("system"), template=f.string("template"),
                   context=tuple(f.ints("context")), raw=f.boolean("raw", False),
                   format=parse_format(f.get("format")),
                   images=tuple(decode_images(f.strings("images"))),
                   options=parse_options(f.obj("options")), stream=f.boolean("stream", True),
                   keep_alive=parse_keep_alive(f.get("keep_alive")),
                   think=parse_think(f.get("think")),
                   truncate=f.boolean("truncate", default_truncate()),
                   shift=f.boolean("shift", True), logprobs=f.boolean("logprobs", False),
                   top_logprobs=parse_top_logprobs(f.integer("top_logprobs")))


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: tuple[Message, ...] = ()
    tools: tuple[Mapping[str, Any], ...] = ()
    format: str | dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    stream: bool = True
    keep_alive: float | None = None
    think: bool | str | None = None
    truncate: bool = True    # a prompt longer than num_ctx loses older messages (or 400)
    shift: bool = True       # at the end of the context: shift it, or stop with "length"
    logprobs: bool = False
    top_logprobs: int = 0
    tool_choice: ToolChoice = field(default_factory=ToolChoice)

    @classmethod
    def parse(cls, body: Any) -> ChatRequest:
        f = Fields(body, "ChatRequest")
        messages = tuple(Message.parse(m) for m in f.array("messages", "[]api.Message"))
        tools = f.array("tools", "api.Tools")
        for tool in tools:
            if not isinstance(tool, dict):
                raise f.fail("tools", tool, "api.Tool")
        return cls(model=f.string("model"), messages=messages, tools=tuple(tools),
                   format=parse_format(f.get("format")), options=parse_options(f.obj("options")),
                   stream=f.boolean("stream", True),
                   keep_alive=parse_keep_alive(f.get("keep_alive")),
                   think=parse_think(f.get("think")),
                   truncate=f.boolean("truncate", default_truncate()),
                   shift=f.boolean("shift", True), logprobs=f.boolean("logprobs", False),
                   top_logprobs=parse_top_logprobs(f.integer("top_logprobs")),
                   # beyond Ollama: OpenAI's tool_choice, so a native client can require a call
                   tool_choice=ToolChoice.parse(f.get("tool_choice")))


@dataclass(frozen=True)
class EmbedRequest:
    model: str
    inputs: tuple[str, ...]
    truncate: bool = True
    dimensions: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    keep_alive: float | None = None

    @classmethod
    def parse(cls, body: Any) -> EmbedRequest:
        f = Fields(body, "EmbedRequest")
        raw = f.get("input")
        if raw is None:
            inputs: list[str] = []
        elif isinstance(raw, str):
            inputs = [raw]
        elif isinstance(raw, list) and all(isinstance(item, str) for item in raw):
            inputs = raw
        else:
            raise BadRequest("invalid input type")
        dimensions = f.integer("dimensions", 0) or 0
        if dimensions < 0:
            raise BadRequest("dimensions must be a positive integer")
        return cls(model=f.string("model"), inputs=tuple(inputs),
                   truncate=f.boolean("truncate", default_truncate()), dimensions=dimensions,
                   options=parse_options(f.obj("options")),
                   keep_alive=parse_keep_alive(f.get("keep_alive")))


@dataclass(frozen=True)
class EmbeddingsRequest:
    model: str
    prompt: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    keep_alive: float | None = None

    @classmethod
    def parse(cls, body: Any) -> EmbeddingsRequest:
        f = Fields(body, "EmbeddingRequest")
        return cls(model=f.string("model"), prompt=f.string("prompt"),
                   options=parse_options(f.obj("options")),
                   keep_alive=parse_keep_alive(f.get("keep_alive")))


# ----------------------------------------------------------------------------- responses

def rfc3339(moment: datetime) -> str:
    """RFC 3339 with fractional seconds and the zone, as Go formats time.Time in JSON."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    text = moment.isoformat(timespec="microseconds")
    return text.replace("+00:00", "Z")


def now_rfc3339() -> str:
    return rfc3339(datetime.now(UTC))


def final_stats(chunk: GenerationChunk, total_duration: int,
                load_duration: int | None = None) -> dict[str, int]:
    """The statistics of a final chunk; zero values left out (Go's omitempty).
    prompt_cache_count (ours): prompt tokens the prompt cache gave, so not in prompt_eval_count."""
    stats = {
        "total_duration": total_duration,
        "load_duration": chunk.load_duration if load_duration is None else load_duration,
        "prompt_eval_count": chunk.prompt_eval_count,
        "prompt_cache_count": chunk.prompt_cache_count,
        "prompt_eval_duration": chunk.prompt_eval_duration,
        "eval_count": chunk.eval_count,
        "eval_duration": chunk.eval_duration,
    }
    return {key: value for key, value in stats.items() if value}


def token_logprobs(entries: Sequence[TokenLogprob], *, always_top: bool = False
                   ) -> list[dict[str, Any]]:
    """`logprobs` entries as Ollama and OpenAI's chat both shape them: {token, logprob, bytes,
    top_logprobs: [{token, logprob, bytes}]}; Ollama leaves an empty top_logprobs out."""

    def one(entry: TokenLogprob) -> dict[str, Any]:
        return {"token": entry.token, "logprob": entry.logprob, "bytes": list(entry.bytes)}

    out = []
    for entry in entries:
        item = one(entry)
        if entry.top or always_top:
            item["top_logprobs"] = [one(top) for top in entry.top]
        out.append(item)
    return out


def l2_normalise(vector: Sequence[float] | np.ndarray) -> np.ndarray:
    """The vector over its length (computed in float64), as float32: what Ollama returns."""
    v = np.asarray(vector, np.float64)
    norm = math.sqrt(float(np.dot(v, v)))
    return (v if norm == 0.0 else v / norm).astype(np.float32)


def check_finite(vectors: Sequence[Sequence[float] | np.ndarray]) -> None:
    for vector in vectors:
        if not np.isfinite(np.asarray(vector, np.float64)).all():
            raise TrioLLMError("embedding contains NaN or Inf values")
