"""CORS: which browser origins may call the API (Ollama's defaults plus OLLAMA_ORIGINS).

A request without an `Origin` header (curl, SDKs) is not a browser request and passes. A
browser request from an origin not on the list is refused with 403, preflight included; an
allowed one gets the Access-Control-* headers.

Origins and patterns are parsed as URLs and compared part by part (scheme, host, port), never
as text globs: `http://localhost:80@evil.example` is not an origin at all (it has user info),
and `http://localhost.evil.example` does not match `http://localhost`. In a pattern the host
may be `*` (any) or `*.example.com` (any subdomain) and the port `*` (any); a pattern without a
port matches only the scheme's default port. `*` alone allows every origin.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

from quart import Quart, Response, request

from trio_llm.api.hosts import HostPolicy
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


DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Origin:
    """A browser origin, `scheme://host[:port]`, in lower case; port None = the default."""

    scheme: str
    host: str
    port: str | None

    @classmethod
    def parse(cls, text: str, pattern: bool = False) -> Origin | None:
        """The origin `text` names, or None if it is not one: user info, a path, a query or
        a fragment disqualify it. With `pattern`, the host and port may be `*`."""
        text = text.strip()
        scheme, sep, rest = text.partition("://")
        if not sep or not scheme or any(c in rest for c in "@/?#\\ "):
            return None
        if not scheme.isascii() or not (scheme[0].isalpha() and all(
                c.isalnum() or c in "+-." for c in scheme)):
            return None
        if rest.startswith("["):
            end = rest.find("]")
            if end < 0:
                return None
            host, tail = rest[: end + 1], rest[end + 1:]
        else:
            host, colon, port = rest.partition(":")
            tail = colon + port
        port_text: str | None = None
        if tail:
            port_text = tail[1:]
            if not tail.startswith(":") or not (port_text.isdigit() or (
                    pattern and port_text == "*")):
                return None
            if port_text != "*":
                if int(port_text) > 65535:
                    return None
                port_text = str(int(port_text))
        scheme = scheme.lower()
        if port_text is not None and DEFAULT_PORTS.get(scheme) == (
                int(port_text) if port_text.isdigit() else None):
            port_text = None
        host = urllib.parse.unquote(host).lower()
        if not pattern and "*" in host:
            return None
        return cls(scheme, host, port_text)

    def matches(self, origin: Origin) -> bool:
        """Whether `origin` is allowed by this pattern."""
        if self.scheme != origin.scheme:
            return False
        if self.host == "*":
            host_ok = True
        elif self.host.startswith("*."):
            host_ok = origin.host.endswith(self.host[1:]) and len(origin.host) > len(self.host) - 1
        else:
            host_ok = self.host == origin.host
        return host_ok and (self.port == "*" or self.port == origin.port)


class CorsPolicy:
    """Matches an Origin header against the allowed patterns."""

    def __init__(self, extra_origins: Sequence[str] = ()) -> None:
        self.patterns = (*DEFAULT_ORIGINS, *extra_origins)
        self._allow_all = "*" in self.patterns
        self._parsed = [p for p in (Origin.parse(t, pattern=True) for t in self.patterns)
                        if p is not None]

    def allows(self, origin: str) -> bool:
        if self._allow_all:
            return True
        parsed = Origin.parse(origin)
        return parsed is not None and any(p.matches(parsed) for p in self._parsed)


def headers_allowed(requested: str) -> bool:
    names = [h.strip().lower() for h in requested.split(",") if h.strip()]
    return all(n in ALLOWED_HEADERS or n.startswith(ALLOWED_HEADER_PREFIXES) for n in names)


def install(app: Quart, policy: CorsPolicy, hosts: HostPolicy) -> None:
    """Check every browser request's origin first; decorate allowed responses last.

    A page served from this server's own address (same origin) may call it; "own" is judged
    by the Host header only when that Host names this server (loopback or an allowed host):
    a rebound `Host: evil.example` with `Origin: http://evil.example` is not same-origin."""

    def same_origin(origin: str) -> bool:
        host = request.headers.get("Host", "")
        if not host or not hosts.is_local_name(host):
            return False
        return origin.lower() in (f"http://{host}".lower(), f"https://{host}".lower())

    @app.before_request
    async def check_origin() -> Response | None:
        origin = request.headers.get("Origin")
        if not origin or same_origin(origin):
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
        if origin and not same_origin(origin) and policy.allows(origin):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers.add("Vary", "Origin")
        return response
