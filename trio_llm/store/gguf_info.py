"""What `list` and `show` say about a GGUF model: details, model_info and capabilities.

Read from the GGUF header with the engine's reader (no weights are touched). The rules are
Ollama's: parameter size from `general.size_label` (else counted from the tensors),
quantization level from `general.file_type`, long arrays (vocabularies, merges) emptied unless
verbose, and capabilities derived from the metadata and the template text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFValueType, LlamaFileType

from trio_llm.formats.gguf_file import GGUFArray, GGUFError, read_gguf
from trio_llm.prompt.template import capabilities as template_capabilities
from trio_llm.prompt.template import special_tokens
from trio_llm.store.errors import NotGGUF

_HIDDEN_KEYS = ("general.name", "tokenizer.chat_template")
_MAX_SHOWN_ARRAY = 5
# What a verbose show expands, at most: arrays beyond these are shown empty, as a brief show
# shows every long array, so a crafted file cannot make one request build gigabytes of JSON.
# Gemma 3's vocabulary (262,144 tokens, scores and types) fits.
MAX_VERBOSE_ARRAY = 1 << 20       # items of one array
MAX_VERBOSE_ITEMS = 1 << 22       # items of all arrays together
MAX_VERBOSE_BYTES = 32 << 20      # bytes of all arrays together, as stored in the file
_SMALL_ARRAY_BYTES = 1 << 16      # a short array shown even when brief: at most this big


@dataclass
class GGUFSummary:
    """The header facts the store needs, small enough to cache per model blob."""

    architecture: str
    parameter_count: int
    parameter_size: str
    quantization_level: str
    model_info: dict[str, Any]
    has_pooling: bool = False
    has_vision: bool = False
    has_audio: bool = False
    chat_template: str = ""          # the GGUF's own Jinja template, for template detection
    bos_token: str = ""              # the BOS and EOS token texts, for templates that write them
    eos_token: str = ""
    tensors: list[dict[str, Any]] = field(default_factory=list)   # only when verbose


def summarize(path: Path | str, verbose: bool = False) -> GGUFSummary:
    """Read a GGUF header into a summary. Raises NotGGUF for anything unreadable."""
    try:
        gguf = read_gguf(path)
    except (GGUFError, OSError) as exc:
        raise NotGGUF(str(exc)) from None
    with gguf:
        meta = gguf.metadata
        arch = str(meta.get("general.architecture", "unknown"))
        count = sum(t.n_elements for t in gguf.tensors.values())
        info: dict[str, Any] = {}
        budget = _Budget(MAX_VERBOSE_ITEMS if verbose else 0, MAX_VERBOSE_BYTES)
        for key, value in meta.items():
            if key in _HIDDEN_KEYS:
                continue
            if isinstance(value, GGUFArray):
                info[key] = _shown_array(value, budget)
            else:
                info[key] = _json_value(value)
        info.setdefault("general.parameter_count", count)
        # an encoder (attention.causal false) pools even when the file names no pooling type
        encoder = meta.get(f"{arch}.attention.causal") is False
        tensors = [{"name": t.name, "type": t.type.name, "shape": list(t.shape)}
                   for t in gguf.tensors.values()] if verbose else []
        bos_token, eos_token = special_tokens(meta)
        return GGUFSummary(
            architecture=arch,
            parameter_count=count,
            parameter_size=_size_label(meta, count),
            quantization_level=quantization_level(meta.get("general.file_type")),
            model_info=dict(sorted(info.items())),
            has_pooling=f"{arch}.pooling_type" in meta or encoder,
            has_vision=f"{arch}.vision.block_count" in meta,
            has_audio=f"{arch}.audio.block_count" in meta,
            chat_template=str(meta.get("tokenizer.chat_template", "")),
            bos_token=bos_token, eos_token=eos_token, tensors=tensors,
        )


@dataclass
class _Budget:
    """What is left of the items and bytes a show may still expand."""

    items: int
    nbytes: int

    def take(self, array: GGUFArray) -> bool:
        # an array of arrays may hold as many items as it has bytes
        items = array.nbytes if array.item_type == GGUFValueType.ARRAY else len(array)
        if items > MAX_VERBOSE_ARRAY or items > self.items or array.nbytes > self.nbytes:
            return False
        self.items -= items
        self.nbytes -= array.nbytes
        return True


def _shown_array(array: GGUFArray, budget: _Budget) -> list[Any]:
    """A metadata array as show lists it: short ones always, long ones only within the
    verbose budget, else empty (Ollama empties long arrays unless verbose)."""
    small = len(array) <= _MAX_SHOWN_ARRAY and array.nbytes <= _SMALL_ARRAY_BYTES
    if small or budget.take(array):
        return _json_value(array.tolist())
    return []


def _size_label(meta: dict[str, Any], count: int) -> str:
    label = meta.get("general.size_label")
    if isinstance(label, str) and label.strip():
        return label.strip()
    return human_number(count)


def human_number(n: int) -> str:
    """A parameter count as Ollama writes it: 8e9 "8B", 3.21e9 "3.2B", 1.345e8 "134.52M"."""
    for scale, suffix, digits in ((1e12, "T", 1), (1e9, "B", 1), (1e6, "M", 2), (1e3, "K", 0)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f}{suffix}" if value == int(value) else f"{value:.{digits}f}{suffix}"
    return str(n)


def quantization_level(file_type: Any) -> str:
    """`general.file_type` as a name: 3 -> "Q4_1", 15 -> "Q4_K_M", 1 -> "F16"."""
    if not isinstance(file_type, int):
        return "unknown"
    try:
        name = LlamaFileType(file_type).name
    except ValueError:
        return "unknown"
    name = name.removeprefix("MOSTLY_").removeprefix("ALL_")
    return {"MXFP4_MOE": "MXFP4", "GUESSED": "unknown"}.get(name, name)


def _json_value(value: Any) -> Any:
    """Metadata as JSON: float32 values printed with float32's shortest digits (1e-05)."""
    if isinstance(value, float):
        as_f32 = np.float32(value)
        if float(as_f32) == value and np.isfinite(as_f32):
            return float(str(as_f32))
        return value
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


def capabilities(summary: GGUFSummary | None, template: str, has_projector: bool = False
                 ) -> list[str]:
    """Ollama's capability list for a model: completion or embedding, then what the template
    (the one that renders, trio_llm.prompt) and the weights support (tools, insert, vision,
    audio, thinking)."""
    caps = []
    if summary is not None and summary.has_pooling:
        caps.append("embedding")
    else:
        caps.append("completion")
    from_template = template_capabilities(template)
    caps.extend(c for c in ("tools", "insert") if c in from_template)
    if has_projector or (summary is not None and summary.has_vision):
        caps.append("vision")
    if summary is not None and summary.has_audio:
        caps.append("audio")
    if "thinking" in from_template:
        caps.append("thinking")
    return caps
