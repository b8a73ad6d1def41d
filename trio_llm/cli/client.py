"""A small blocking client of the HTTP API at OLLAMA_HOST, for the CLI verbs."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from trio_llm import config


class CLIError(Exception):
    """A failure to show the user as it is; the CLI exits non-zero."""


def base_url() -> str:
    return config.get("OLLAMA_HOST").url


def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One request; the JSON answer, or CLIError with the server's `error` or a connect hint."""
    url = base_url() + path
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=600) as reply:
            text = reply.read().decode()
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read().decode()).get("error", exc.reason)
        except (ValueError, AttributeError):
            message = exc.reason
        raise CLIError(f"Error: {message}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        raise CLIError(f"could not connect to trio-llm server at {base_url()}, "
                       "is it running?") from None
    return json.loads(text) if text.strip() else None
