"""The one table of generation options (request `options`, Modelfile PARAMETER): each option's
name, type, default, allowed range and the part that consumes it.

Everything else reads this table: the API's type check (api/schemas.py), the range check
(limits.py), the Modelfile's PARAMETER parsing (formats/params.py), the scheduler's LoadSpec
and reload key (nursery/), and the sampler's defaults (engine/sampler.py). A leaf module: it
imports nothing from trio_llm.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class Kind(Enum):
    """An option's value type; the value is the word the Modelfile errors use, `api` the word
    Ollama's API errors use (`option "top_k" must be of type integer`)."""

    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    STRINGS = "strings"
    STRING = "string"

    @property
    def api(self) -> str:
        return {"int": "integer", "float": "float32", "bool": "boolean",
                "strings": "array of strings", "string": "string"}[self.value]


class Part(Enum):
    """Who consumes an option."""

    LOAD = "load"            # shapes the loaded model (LoadSpec); a change reloads it
    THREADS = "threads"      # applies when a request loads the model; never reloads it
    SAMPLER = "sampler"      # engine SamplerOptions
    RUNNER = "runner"        # the runner's generation loop (num_predict, num_keep, stop)
    CONSTRAINT = "constraint"  # beyond Ollama: constrains the output (api/constraints.py)
    LEGACY = "legacy"        # older Modelfiles only; ignored, as Ollama now ignores them


@dataclass(frozen=True)
class Option:
    """One option. low/high: the allowed range (None: unbounded on that side). In a request,
    a LEGACY option is logged and dropped as Ollama does; CONSTRAINT options have no Modelfile
    PARAMETER form."""

    name: str
    kind: Kind
    default: Any
    part: Part
    low: float | None = None
    high: float | None = None

    @property
    def in_requests(self) -> bool:
        return self.part is not Part.LEGACY

    @property
    def in_modelfiles(self) -> bool:
        return self.part is not Part.CONSTRAINT


MAX_CONTEXT = 1 << 24        # num_ctx beyond any model's training context
MAX_BATCH = 8192             # num_batch: tokens per prompt step (scratch grows with it)

INT, FLOAT, BOOL, STRINGS = Kind.INT, Kind.FLOAT, Kind.BOOL, Kind.STRINGS

OPTIONS: dict[str, Option] = {o.name: o for o in (
    # load time: num_ctx's default is OLLAMA_CONTEXT_LENGTH's (config.py reads it from here)
    Option("num_ctx", INT, 4096, Part.LOAD, 0, MAX_CONTEXT),
    Option("num_batch", INT, 512, Part.LOAD, 0, MAX_BATCH),
    Option("num_gpu", INT, -1, Part.LOAD, -1),                # -1: as many layers as fit
    Option("main_gpu", INT, None, Part.LOAD, 0),
    Option("use_mmap", BOOL, None, Part.LOAD),
    Option("num_thread", INT, 0, Part.THREADS, 0),            # 0: every physical core
    # sampling (engine/sampler.py's meanings)
    Option("temperature", FLOAT, 0.8, Part.SAMPLER, 0.0),     # 0: greedy
    Option("top_k", INT, 40, Part.SAMPLER),                   # 0: off
    Option("top_p", FLOAT, 0.9, Part.SAMPLER, 0.0, 1.0),      # 1: off
    Option("min_p", FLOAT, 0.0, Part.SAMPLER, 0.0, 1.0),      # 0: off
    Option("typical_p", FLOAT, 1.0, Part.SAMPLER, 0.0, 1.0),  # 1: off
    Option("repeat_penalty", FLOAT, 1.0, Part.SAMPLER, 0.0),  # 1: off
    Option("repeat_last_n", INT, 64, Part.SAMPLER, -1),       # 0: no penalties, -1: whole history
    Option("presence_penalty", FLOAT, 0.0, Part.SAMPLER),
    Option("frequency_penalty", FLOAT, 0.0, Part.SAMPLER),
    Option("seed", INT, None, Part.SAMPLER),                  # None or < 0: a fresh random stream
    # the generation loop
    Option("num_predict", INT, -1, Part.RUNNER),              # -1: until a stop or the end
    Option("num_keep", INT, 4, Part.RUNNER),                  # tokens a context shift keeps
    Option("stop", STRINGS, (), Part.RUNNER),
    Option("draft_num_predict", INT, 0, Part.RUNNER, 0, 0),   # no draft models: only 0 (off)
    # beyond Ollama
    Option("grammar", Kind.STRING, None, Part.CONSTRAINT),
    Option("regex", Kind.STRING, None, Part.CONSTRAINT),
    # accepted for older Modelfiles
    *(Option(name, kind, None, Part.LEGACY) for name, kind in (
        ("mirostat", INT), ("mirostat_tau", FLOAT), ("mirostat_eta", FLOAT), ("tfs_z", FLOAT),
        ("penalize_newline", BOOL), ("numa", BOOL), ("low_vram", BOOL), ("f16_kv", BOOL),
        ("vocab_only", BOOL), ("use_mlock", BOOL), ("logits_all", BOOL))),
)}


def default(name: str) -> Any:
    """The table's default for option `name`."""
    return OPTIONS[name].default


def names(*parts: Part) -> tuple[str, ...]:
    """The options consumed by any of `parts`, in table order."""
    return tuple(o.name for o in OPTIONS.values() if o.part in parts)
