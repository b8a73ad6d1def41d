"""A Docker registry v2 client for /api/push and /api/pull (Ollama's registry protocol, without
its login): `push` uploads a stored model, `pull_from_registry` fetches one (catalog names
still come from the built-in catalog: `is_registry_name` tells them apart). Both are trio
async generators of Ollama progress dicts."""

from __future__ import annotations

from trio_llm.registry.client import RegistryError, Repository
from trio_llm.registry.pull import is_registry_name, pull_from_registry
from trio_llm.registry.push import push

__all__ = ["RegistryError", "Repository", "is_registry_name", "pull_from_registry", "push"]
