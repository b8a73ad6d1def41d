"""CORS: which browser origins may call the API (Ollama's defaults plus OLLAMA_ORIGINS).

A request without an `Origin` header (curl, SDKs) is not a browser request and passes. A
browser request from an origin not on the list is refused with 403, preflight included; an
allowed one gets the Access-Control-* headers. Patterns may hold `*` wildcards.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from quart import Quart, Response, request

from trio_llm.api.streaming import json_response

DEFAULT_ORIGINS: tuple[str, ...] = (
    *(f"{scheme}://{host}{port}" for host in ("localhost", "127.0.0.1", "0.0.0.0")
      for scheme in ("http", "https") for port in ("", ":*")),
    "app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*",
)
ALLOWED_METHODS = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
ALLOWED_HEADERS = frozenset({
    "authorization", "content-type", "user-agent", "accept", "x-requested-with", "origin",
    "openai-beta", "accept-encoding", "cache-control", "content-length",
})
ALLOWED_HEADER_PREFIXES = ("x-stainless-",)
MAX_AGE_SECONDS = "43200"


class CorsPolicy:
    """Matches an Origin header against the allowed patterns."""

    def __init__(self, extra_origins: Sequence[str] = ()) -> None:
        self.patterns = (*DEFAULT_ORIGINS, *extra_origins)
        self._allow_all = "*" in self.patterns
        regex = "|".join(".*".join(re.escape(part) for part in pattern.split("*"))
                         for pattern in self.patterns)
        self._matcher = re.compile(f"(?:{regex})", re.IGNORECASE)

    def allows(self, origin: str) -> bool:
        return self._allow_all or self._matcher.fullmatch(origin) is not None


def headers_allowed(requested: str) -> bool:
    names = [h.strip().lower() for h in requested.split(",") if h.strip()]
    return all(n in ALLOWED_HEADERS or n.startswith(ALLOWED_HEADER_PREFIXES) for n in names)


def _same_origin(origin: str) -> bool:
    return origin.lower() in (f"http://{request.host}".lower(), f"https://{request.host}".lower())


def install(app: Quart, policy: CorsPolicy) -> None:
    """Check every browser request's origin first; decorate allowed responses last."""

    @app.before_request
    async def check_origin() -> Response | None:
        origin = request.headers.get("Origin")
        if not origin or _same_origin(origin):
            return None
        if not policy.allows(origin):
            return json_response({"error": f"origin not allowed: {origin}"}, 403)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            if not headers_allowed(request.headers.get("Access-Control-Request-Headers", "")):
                return json_response({"error": "request headers not allowed"}, 403)
            response = Response(b"", status=204)
            response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
            requested = request.headers.get("Access-Control-Request-Headers")
            if requested:
                response.headers["Access-Control-Allow-Headers"] = requested
            response.headers["Access-Control-Max-Age"] = MAX_AGE_SECONDS
            return response
        return None

    @app.after_request
    async def allow_origin(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin and not _same_origin(origin) and policy.allows(origin):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers.add("Vary", "Origin")
        return response
