"""The HTTP layer: Ollama's REST API and the OpenAI-compatible /v1 routes on Quart-Trio.

`create_app(backend)` builds the application; `serve(backend, host)` runs it on Hypercorn's
trio worker. The routes reach models only through the Backend protocol (api/backend.py).
"""

from __future__ import annotations

from trio_llm.api.app import create_app
from trio_llm.api.serve import serve

__all__ = ["create_app", "serve"]
