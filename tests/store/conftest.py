"""Store fixtures: empty stores in temp folders, and one with smollm2:135m imported once per
session from the cached GGUF (other stores get it by hard-linking, which is safe because blobs
are never modified in place)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from trio_llm.store import Store, drain


def tree(root: Path) -> dict[str, int]:
    """Every file and folder under `root` (folders with size -1), for before/after comparisons."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs:
            out[os.path.relpath(os.path.join(dirpath, name), root)] = -1
        for name in files:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, root)] = os.path.getsize(path)
    return out


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "models")


@pytest.fixture(scope="session")
def pulled_root(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path) -> Path:
    root = tmp_path_factory.mktemp("pulled") / "models"
    drain(Store(root).pull("smollm2:135m", source=smollm2_path))
    return root


@pytest.fixture
def smol_store(tmp_path: Path, pulled_root: Path) -> Store:
    """A private store already holding smollm2:135m."""
    root = tmp_path / "models"
    shutil.copytree(pulled_root, root, copy_function=os.link)
    return Store(root)
