"""DNS-rebinding defence: a loopback-bound server answers only requests addressed to loopback.

A web page can make a browser send requests to 127.0.0.1 under its own host name (DNS
rebinding: evil.example resolves to 127.0.0.1 for the second lookup). Such a request still
carries `Host: evil.example`, so a server bound to a loopback address refuses any Host that is
not `localhost`, `127.0.0.1` or `[::1]` (any port) or listed in OLLAMA_ALLOWED_HOSTS, with a
403 before any route runs. A server bound to another address was exposed on purpose and
answers every Host, as Ollama's does.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from quart import Quart, Response, request

from trio_llm.api.streaming import json_response

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def split_host(header: str) -> tuple[str, int | None] | None:
    """(host name in lower case, port or None) of a Host header; None if it is malformed."""
    text = header.strip().lower()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        host, rest = text[1:end], text[end + 1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, rest = text, ""
        else:
            rest = ":" + port_text
    if rest and not (rest.startswith(":") and rest[1:].isdigit() and int(rest[1:]) < 65536):
        return None
    if not host or any(c in host for c in "/@\\ ?#"):
        return None
    return host, int(rest[1:]) if rest else None


def is_loopback(address: str) -> bool:
    """Whether a bind address only listens on this machine."""
    if address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


class HostPolicy:
    """Which Host headers a server bound to `bind_host` answers."""

    def __init__(self, bind_host: str | None, allowed: Sequence[str] = ()) -> None:
        self.enforced = bind_host is not None and is_loopback(bind_host)
        self.allowed = tuple(a.strip().lower() for a in allowed if a.strip())

    def is_local_name(self, header: str) -> bool:
        """A Host header that names this server as loopback or as an allowed host."""
        parsed = split_host(header)
        if parsed is None:
            return False
        host, port = parsed
        if host in LOOPBACK_NAMES or "*" in self.allowed or host in self.allowed:
            return True
        return port is not None and f"{host}:{port}" in self.allowed

    def allows(self, header: str) -> bool:
        return not self.enforced or not header or self.is_local_name(header)


def install(app: Quart, policy: HostPolicy) -> None:
    """Refuse requests with a foreign Host first, before CORS, auth or any route."""

    @app.before_request
    async def check_host() -> Response | None:
        if policy.allows(request.headers.get("Host", "")):
            return None
        return json_response({"error": "host not allowed: this server answers only requests "
                                       "for localhost (see OLLAMA_ALLOWED_HOSTS)"}, 403)
