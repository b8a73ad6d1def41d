"""A small blocking client of the HTTP API at OLLAMA_HOST, for the CLI verbs.

Every request carries `Authorization: Bearer $OLLAMA_API_KEY` when that variable is set (a
server with OLLAMA_API_KEYS wants one)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from trio_llm import config


class CLIError(Exception):
    """A failure to show the user as it is; the CLI exits non-zero."""


def base_url() -> str:
    return config.get("OLLAMA_HOST").url


def headers(content_type: str = "application/json", **extra: str) -> dict[str, str]:
    """The headers of every request: the content type, and the API key if there is one."""
    out = {"Content-Type": content_type, **extra}
    key = config.get("OLLAMA_API_KEY")
    if key:
        out["Authorization"] = f"Bearer {key}"
    return out


def call(method: str, path: str, body: dict[str, Any] | None = None,
         missing_ok: bool = False) -> Any:
    """One request; the JSON answer, or CLIError with the server's `error` or a connect hint.
    With `missing_ok`, a 404 answers False instead of raising."""
    url = base_url() + path
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers())
    try:
        with _open(request, missing_ok) as reply:
            text = reply.read().decode()
    except _Missing:
        return False
    return json.loads(text) if text.strip() else None


def upload(path: str, body: Any, size: int) -> None:
    """POST a file-like body of `size` bytes, read as it is sent (for /api/blobs)."""
    request = urllib.request.Request(base_url() + path, data=body, method="POST",
                                     headers=headers("application/octet-stream",
                                                     **{"Content-Length": str(size)}))
    with _open(request) as reply:
        reply.read()


class _Missing(Exception):
    """A 404 that the caller asked to see as an answer."""


def _open(request: urllib.request.Request, missing_ok: bool = False) -> Any:
    """urlopen, with the server's `error` or a connect hint as CLIError."""
    try:
        return urllib.request.urlopen(request, timeout=600)
    except urllib.error.HTTPError as exc:
        if missing_ok and exc.code == 404:
            raise _Missing() from None
        try:
            message = json.loads(exc.read().decode()).get("error", exc.reason)
        except (ValueError, AttributeError):
            message = exc.reason
        raise CLIError(f"Error: {message}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        raise CLIError(f"could not connect to trio-llm server at {base_url()}, "
                       "is it running?") from None


def stream(path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """POST and yield each NDJSON line as it arrives; a line with `error` raises CLIError."""
    url = base_url() + path
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers=headers())
    with _open(request) as reply:
        for raw in reply:
            if not raw.strip():
                continue
            item = json.loads(raw)
            if "error" in item:
                raise CLIError(f"Error: {item['error']}")
            yield item


def table(rows: list[tuple[str, ...]]) -> str:
    """Columns padded to their widest cell, as Ollama's tables print."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("    ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                     .rstrip() for row in rows)
