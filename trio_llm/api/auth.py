"""API keys (OLLAMA_API_KEYS): who may call which route, checked before any route runs.

Ollama has no authentication and tells users to put a proxy in front; we offer keys with two
scopes. `inference` may generate, chat, embed, list and show models and use /v1; `admin` may
do everything, including pull, push, create, copy, delete, blobs and /metrics. `/`,
`/api/version` and `/health` stay open (liveness probes carry no key), and so do CORS
preflights, which browsers send without credentials. With no keys configured every route is
open, as in Ollama.

A key is presented as `Authorization: Bearer <key>` (or Anthropic's `x-api-key: <key>`).
It is compared with every configured key through their SHA-256 digests with
`hmac.compare_digest`, so the time taken says nothing about how much of a key was right, or
which one matched. No key or an unknown key is 401; a known key whose scope does not cover the
route is 403.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from quart import Quart, request

from trio_llm.errors import Forbidden, Unauthorized

OPEN_PATHS = frozenset({"/", "/api/version", "/health"})
INFERENCE_ROUTES = frozenset({
    "/api/generate", "/api/chat", "/api/embed", "/api/embeddings", "/api/tags", "/api/show",
    "/api/ps", "/api/tokenize", "/api/detokenize", "/api/rerank",
})
INFERENCE_PREFIXES = ("/v1/",)


def required_scope(path: str) -> str | None:
    """The scope a path needs: None (open), "inference" or "admin"."""
    if path in OPEN_PATHS:
        return None
    if path in INFERENCE_ROUTES or path.startswith(INFERENCE_PREFIXES):
        return "inference"
    return "admin"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


class KeyRing:
    """The configured keys, kept only as digests, and the scope of each."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        self._keys = [(_digest(key), scope) for key, scope in keys.items()]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def scope_of(self, presented: str) -> str | None:
        """The scope of the presented key, or None if it is not one of ours. Every key is
        compared, whichever matches, so the time does not depend on the answer."""
        offered = _digest(presented)
        found: str | None = None
        for digest, scope in self._keys:
            if hmac.compare_digest(offered, digest):
                found = scope
        return found

    def check(self, path: str, method: str, authorization: str) -> None:
        """Raise Unauthorized or Forbidden unless the request may go on."""
        needed = required_scope(path)
        if not self.enabled or needed is None or method == "OPTIONS":
            return
        kind, _, token = authorization.strip().partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise Unauthorized("unauthorized: this server needs an API key "
                               "(Authorization: Bearer <key>)")
        scope = self.scope_of(token.strip())
        if scope is None:
            raise Unauthorized("unauthorized: the API key is not valid")
        if needed == "admin" and scope != "admin":
            raise Forbidden("forbidden: this route needs an admin key")


def presented(headers: Mapping[str, str]) -> str:
    """The Authorization header, or Anthropic's `x-api-key: <key>` as a Bearer key (what the
    anthropic client sends)."""
    authorization = headers.get("Authorization", "")
    key = headers.get("x-api-key", "")
    return authorization if authorization.strip() or not key.strip() else f"Bearer {key}"


def install(app: Quart, keys: KeyRing) -> None:
    """Check the key of every request (after the Host and CORS checks)."""

    @app.before_request
    async def check_key() -> None:
        keys.check(request.path, request.method, presented(request.headers))
