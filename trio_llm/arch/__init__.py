"""Model architectures, one module each, and the registry from `general.architecture` to them.

Each module is an `Architecture` (arch/runtime.py): it reads its hyper-parameters, names its
tensors and writes its forward pass; the shared runtime does the rest. Adding an architecture is
its module, its test and one line here.
"""

from __future__ import annotations

from types import ModuleType
from typing import cast

from trio_llm.arch import bert, gemma3, llama, nomic_bert, phi3, qwen2, qwen3
from trio_llm.arch.runtime import Architecture
from trio_llm.errors import ModelFileError

ARCHITECTURES: dict[str, ModuleType] = {
    "bert": bert,
    "gemma3": gemma3,
    "llama": llama,
    "nomic-bert": nomic_bert,
    "phi3": phi3,
    "qwen2": qwen2,
    "qwen3": qwen3,
}


class UnsupportedArchitecture(ModelFileError):
    """The GGUF's general.architecture has no implementation here."""


def supported() -> list[str]:
    return sorted(ARCHITECTURES)


def architecture_for(name: str) -> Architecture:
    try:
        return cast(Architecture, ARCHITECTURES[name])
    except KeyError:
        raise UnsupportedArchitecture(
            f"unsupported model architecture {name!r} (supported: {', '.join(supported())})"
        ) from None
