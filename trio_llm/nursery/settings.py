"""The OLLAMA_* settings the scheduler uses, read through trio_llm.config (the one table)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trio_llm import config
from trio_llm.options import default


def _default(name: str) -> Any:
    """The table's default for `name`, parsed (ignores the environment)."""
    return config.get(name, environ={})


@dataclass(frozen=True)
class SchedulerSettings:
    """Scheduler knobs; the defaults are config.py's defaults, `from_env` reads the environment."""

    keep_alive: float = field(default_factory=lambda: _default("OLLAMA_KEEP_ALIVE"))
    context_length: int = field(default_factory=lambda: _default("OLLAMA_CONTEXT_LENGTH"))
    num_parallel: int = field(default_factory=lambda: _default("OLLAMA_NUM_PARALLEL"))
    max_loaded_models: int = field(default_factory=lambda: _default("OLLAMA_MAX_LOADED_MODELS"))
    max_queue: int = field(default_factory=lambda: _default("OLLAMA_MAX_QUEUE"))
    sched_spread: bool = field(default_factory=lambda: _default("OLLAMA_SCHED_SPREAD"))
    gpu_overhead: int = field(default_factory=lambda: _default("OLLAMA_GPU_OVERHEAD"))
    load_timeout: float = field(default_factory=lambda: _default("OLLAMA_LOAD_TIMEOUT"))
    kv_cache_type: str = field(default_factory=lambda: _default("OLLAMA_KV_CACHE_TYPE"))
    flash_attention: bool = field(default_factory=lambda: _default("OLLAMA_FLASH_ATTENTION"))
    prefill_chunk: int = field(default_factory=lambda: _default("TRIO_LLM_PREFILL_CHUNK"))
    prompt_cache: int = field(default_factory=lambda: _default("TRIO_LLM_PROMPT_CACHE"))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SchedulerSettings:
        def get(name: str) -> Any:
            return config.get(name, environ)

        return cls(keep_alive=get("OLLAMA_KEEP_ALIVE"),
                   context_length=get("OLLAMA_CONTEXT_LENGTH"),
                   num_parallel=get("OLLAMA_NUM_PARALLEL"),
                   max_loaded_models=get("OLLAMA_MAX_LOADED_MODELS"),
                   max_queue=get("OLLAMA_MAX_QUEUE"),
                   sched_spread=get("OLLAMA_SCHED_SPREAD"),
                   gpu_overhead=get("OLLAMA_GPU_OVERHEAD"),
                   load_timeout=get("OLLAMA_LOAD_TIMEOUT"),
                   kv_cache_type=get("OLLAMA_KV_CACHE_TYPE"),
                   flash_attention=get("OLLAMA_FLASH_ATTENTION"),
                   prefill_chunk=get("TRIO_LLM_PREFILL_CHUNK"),
                   prompt_cache=get("TRIO_LLM_PROMPT_CACHE"))

    @property
    def slots(self) -> int:
        """Decode slots per model (0 means the default, 1)."""
        return self.num_parallel or 1

    @property
    def default_context(self) -> int:
        """num_ctx when neither the request nor the Modelfile sets one (0: the table's)."""
        return self.context_length or default("num_ctx")

    @property
    def load_deadline(self) -> float:
        """Seconds a load may take; 0 or negative in the environment means no limit."""
        return self.load_timeout if self.load_timeout > 0 else math.inf

    def max_loaded(self, n_gpus: int) -> int:
        """OLLAMA_MAX_LOADED_MODELS, where 0 means 3 per GPU (3 on a CPU-only machine)."""
        return self.max_loaded_models or 3 * max(1, n_gpus)
