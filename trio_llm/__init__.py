"""trio-llm: an Ollama-compatible local LLM server on trio, with its own C kernels."""

from __future__ import annotations

__version__ = "0.1.0"
