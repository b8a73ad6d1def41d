"""Model architectures, one module each; this registry maps `general.architecture` to a class."""

from __future__ import annotations

from trio_llm.arch.llama import Llama

ARCHITECTURES = {"llama": Llama}


class UnsupportedArchitecture(ValueError):
    """The GGUF's general.architecture has no implementation here."""


def architecture_for(name: str) -> type[Llama]:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise UnsupportedArchitecture(
            f"unsupported model architecture {name!r} (supported: {', '.join(ARCHITECTURES)})"
        ) from None
