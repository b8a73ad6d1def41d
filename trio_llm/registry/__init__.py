"""A Docker registry v2 client for /api/push and /api/pull (Ollama's registry protocol, without
its login): `push` uploads a stored model, `pull` fetches one (catalog names still come from the
built-in catalog). Both are blocking generators of Ollama progress dicts, like `Store.pull`."""

from __future__ import annotations

from trio_llm.registry.client import RegistryError, Repository
from trio_llm.registry.pull import pull, pull_from_registry
from trio_llm.registry.push import push

__all__ = ["RegistryError", "Repository", "pull", "pull_from_registry", "push"]
