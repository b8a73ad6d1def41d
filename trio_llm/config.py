"""Every OLLAMA_* environment variable we honour: name, default, parser and meaning, in one table.

Values are read the way Ollama reads them: trimmed of spaces and quotes; an unset or empty
variable takes the default; an unparsable boolean counts as true; an unparsable number warns and
takes the default.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trio_llm import options

log = logging.getLogger(__name__)

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                   "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(value: str | int | float) -> float:
    """Seconds from a Go duration ("5m", "1h30m", "-1s"), or a number of seconds.

    Negative means forever (math.inf); raises ValueError for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip().strip("\"'")
        try:
            seconds = float(text)
        except ValueError:
            sign = -1.0 if text.startswith("-") else 1.0
            body = text.lstrip("+-")
            parts = _DURATION_PART.findall(body)
            if not body or "".join(n + u for n, u in parts) != body:
                raise ValueError(f"invalid duration {value!r}") from None
            seconds = sign * sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if math.isnan(seconds):
        raise ValueError(f"invalid duration {value!r}")
    return math.inf if seconds < 0 else seconds


def parse_bool(text: str) -> bool:
    """Go's strconv.ParseBool as Ollama uses it: 0/f/false are false, anything else is true."""
    return text.lower() not in ("0", "f", "false")


def parse_uint(text: str) -> int:
    value = int(text, 10)
    if value < 0:
        raise ValueError(f"{text!r} is negative")
    return value


KV_CACHE_TYPES = ("f16", "q8_0", "q4_0")  # OLLAMA_KV_CACHE_TYPE's values (engine/kv_cache.py)


def parse_kv_cache_type(text: str) -> str:
    value = text.lower()
    if value not in KV_CACHE_TYPES:
        raise ValueError(f"not one of {', '.join(KV_CACHE_TYPES)}")
    return value


_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
               "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3}


def parse_size(text: str) -> int:
    """Bytes from a number with an optional unit: 268435456, 256MiB, 512mb, 1GiB (0: none)."""
    match = re.fullmatch(r"(\d+(?:\.\d*)?)\s*([a-z]*)", text.strip().lower())
    if not match or match.group(2) not in _SIZE_UNITS:
        raise ValueError(f"not a size in bytes: {text!r}")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


def parse_origins(text: str) -> list[str]:
    return [o.strip() for o in text.split(",") if o.strip()]


@dataclass(frozen=True)
class Host:
    """Where the server binds, or where the CLI finds it."""

    scheme: str
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def bind(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_host(text: str) -> Host:
    """Parse Ollama's forms: host, host:port, :port, http://host:port, [::1]:port, 0.0.0.0."""
    scheme, rest = "http", text.strip()
    if "://" in rest:
        scheme, rest = rest.split("://", 1)
        scheme = scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"unsupported scheme in {text!r}")
    rest = rest.split("/", 1)[0]
    default_port = {"http": 80, "https": 443}[scheme] if "://" in text else 11434
    host, port = rest, default_port
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise ValueError(f"invalid host {text!r}")
        host, tail = rest[1:end], rest[end + 1:]
        if tail.startswith(":"):
            port = int(tail[1:])
    elif rest.count(":") == 1:
        host, port_text = rest.split(":")
        port = int(port_text)
    if not host:
        host = "127.0.0.1"
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    return Host(scheme, host, port)


def parse_hosts(text: str) -> list[str]:
    """OLLAMA_ALLOWED_HOSTS: host names (any port) or `host:port`, comma-separated."""
    return [h.strip().lower() for h in text.split(",") if h.strip()]


def parse_api_keys(text: str) -> dict[str, str]:
    """OLLAMA_API_KEYS: `key:scope` entries (scope `inference` or `admin`), separated by
    commas or newlines; a value starting with `@`, `/` or `~` names a file of such entries,
    one per line (`#` starts a comment). Raises ValueError for anything malformed, so a typo
    never leaves the server open by accident."""
    if text.startswith(("@", "/", "~")):
        path = Path(text.removeprefix("@")).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read the key file: {exc.strerror}") from None
    keys: dict[str, str] = {}
    for line in text.replace(",", "\n").splitlines():
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        key, sep, scope = entry.rpartition(":")
        if not sep or not key.strip() or scope.strip() not in API_SCOPES:
            raise ValueError("each key needs a scope: KEY:inference or KEY:admin")
        keys[key.strip()] = scope.strip()
    return keys


API_SCOPES = ("inference", "admin")


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    parse: Callable[[str], Any]
    help: str
    strict: bool = False     # a value that does not parse stops the server instead of warning


SETTINGS: tuple[Setting, ...] = (
    Setting("OLLAMA_HOST", "127.0.0.1:11434", parse_host,
            "address the server binds and the CLI connects to"),
    Setting("OLLAMA_MODELS", str(Path.home() / ".ollama" / "models"), Path, "model store"),
    Setting("OLLAMA_KEEP_ALIVE", "5m", parse_duration,
            "how long an idle model stays loaded (negative: forever, 0: unload at once)"),
    Setting("OLLAMA_CONTEXT_LENGTH", str(options.default("num_ctx")), parse_uint,
            "default context length (num_ctx)"),
    Setting("OLLAMA_NUM_PARALLEL", "1", parse_uint, "parallel requests (decode slots) per model"),
    Setting("OLLAMA_MAX_LOADED_MODELS", "0", parse_uint,
            "models loaded at once (0: 3 per GPU, 3 on CPU)"),
    Setting("OLLAMA_MAX_QUEUE", "512", parse_uint, "pending requests before answering 503"),
    Setting("OLLAMA_FLASH_ATTENTION", "false", parse_bool,
            "flash attention (accepted; attention is always the online-softmax form, so a "
            "quantized KV cache never needs it)"),
    Setting("OLLAMA_KV_CACHE_TYPE", "f16", parse_kv_cache_type,
            "KV cache type: f16, q8_0 or q4_0 (models that cannot take a quantized cache keep "
            "f16, with a warning)"),
    Setting("TRIO_LLM_PROMPT_CACHE", "256MiB", parse_size,
            "bytes per loaded model kept for the KV of earlier prompts (system prompt, tools, "
            "earlier turns), reused by any later request starting with the same tokens; "
            "0 turns the prompt cache off"),
    Setting("OLLAMA_TRUNCATE", "true", parse_bool,
            "default of a request's `truncate`: drop older messages from a prompt that does not "
            "fit num_ctx (false: answer 400 instead)"),
    Setting("OLLAMA_ORIGINS", "", parse_origins, "extra allowed CORS origins, comma-separated"),
    Setting("OLLAMA_SCHED_SPREAD", "false", parse_bool, "always spread a model over all GPUs"),
    Setting("OLLAMA_GPU_OVERHEAD", "0", parse_uint, "bytes of GPU memory kept free per GPU"),
    Setting("OLLAMA_LOAD_TIMEOUT", "5m", parse_duration, "give up on a load that stalls"),
    Setting("OLLAMA_NOPRUNE", "false", parse_bool, "do not prune unused blobs at start"),
    Setting("OLLAMA_NOHISTORY", "false", parse_bool, "no history in the interactive REPL"),
    Setting("OLLAMA_DEBUG", "false", parse_bool, "verbose logging"),
    Setting("OLLAMA_ALLOWED_HOSTS", "", parse_hosts,
            "extra Host names a loopback-bound server answers (besides localhost, 127.0.0.1, "
            "[::1]); `*` allows any"),
    Setting("OLLAMA_API_KEYS", "", parse_api_keys,
            "API keys with scopes (`key:inference,key2:admin`, or @file); unset: no auth",
            strict=True),
    Setting("OLLAMA_API_KEY", "", str, "the key the CLI sends as `Authorization: Bearer`"),
    Setting("TRIO_LLM_PREFILL_CHUNK", "256", parse_uint,
            "prompt tokens a step evaluates beside the running sequences' decode tokens, so "
            "a new prompt starts at the next step and running streams keep flowing "
            "(0: num_batch)"),
    Setting("TRIO_LLM_REGISTRY_IDLE_TIMEOUT", "60s", parse_duration,
            "a registry that sends nothing for this long fails the pull or push"),
    Setting("TRIO_LLM_REGISTRY_TIMEOUT", "6h", parse_duration,
            "a pull or push from a registry that takes longer than this fails"),
    Setting("HTTPS_PROXY", "", str, "proxy for registry requests (also HTTP_PROXY, NO_PROXY)"),
)
BY_NAME = {s.name: s for s in SETTINGS}


def get(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """The parsed value of one setting from the environment (or `environ`)."""
    setting = BY_NAME[name]
    env = os.environ if environ is None else environ
    raw = env.get(name, "").strip().strip("\"'")
    if not raw:
        return setting.parse(setting.default) if setting.default else setting.parse("")
    try:
        return setting.parse(raw)
    except ValueError as exc:
        if setting.strict:
            raise ValueError(f"invalid {name}: {exc}") from None
        log.warning("invalid %s=%r (%s); using the default %r", name, raw, exc, setting.default)
        return setting.parse(setting.default)


def snapshot(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every setting's value, for the server's start-up log (keys shown only as a count)."""
    values = {s.name: get(s.name, environ) for s in SETTINGS}
    values["OLLAMA_API_KEYS"] = f"{len(values['OLLAMA_API_KEYS'])} keys"
    values["OLLAMA_API_KEY"] = "(set)" if values["OLLAMA_API_KEY"] else ""
    return values
