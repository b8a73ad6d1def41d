"""A small blocking client of the Docker registry HTTP API v2, as Ollama's push and pull use it.

Requests go through urllib, so HTTPS_PROXY / HTTP_PROXY / NO_PROXY are honoured the way Python
honours them by default, and GET/HEAD redirects (a registry sending blobs to a CDN) are followed.
Every failure becomes a `RegistryError` whose message names the registry: a refused connection,
a TLS failure, a timeout, or the registry's own error answer (`<status>: <message>`).
"""

from __future__ import annotations

import json
import platform
import socket
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException, HTTPResponse
from typing import Any

from trio_llm import __version__
from trio_llm.errors import BadRequest, TrioLLMError
from trio_llm.store.manifests import MANIFEST_V2
from trio_llm.store.names import ModelName

TIMEOUT_S = 60.0     # connect, and each read: a registry silent this long is taken to be gone
USER_AGENT = (f"trio-llm/{__version__} ({platform.machine().lower()} {sys.platform}) "
              f"Python/{platform.python_version()}")


class RegistryError(TrioLLMError):
    """A registry could not be reached, or answered with an error (HTTP 500 to our client)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Leave redirects of PUT/PATCH/POST to the caller: urllib would turn them into GETs."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> urllib.request.Request | None:
        if req.get_method() in ("GET", "HEAD"):
            return super().redirect_request(req, fp, code, msg, headers, newurl)
        return None


@dataclass(frozen=True)
class Repository:
    """One repository (`namespace/model`) on one registry, and how to reach it."""

    scheme: str
    host: str
    namespace: str
    model: str

    @classmethod
    def of(cls, name: ModelName, spelled: str, insecure: bool) -> Repository:
        """The repository of `name`; `spelled` is the name as the user wrote it (its scheme).

        `insecure` means plain HTTP, as Ollama's `--insecure` does; an explicit `http://`
        without it is refused, since it would send the model unencrypted by surprise."""
        if spelled.lower().startswith("http://") and not insecure:
            raise BadRequest("insecure protocol http")
        return cls("http" if insecure else "https", name.host, name.namespace, name.model)

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.host}/v2/{self.namespace}/{self.model}"

    def manifest_url(self, tag: str) -> str:
        return f"{self.base}/manifests/{urllib.parse.quote(tag)}"

    def blob_url(self, digest: str) -> str:
        return f"{self.base}/blobs/{digest}"

    @property
    def uploads_url(self) -> str:
        return f"{self.base}/blobs/uploads/"


class Client:
    """Requests to one registry host, with errors turned into RegistryError."""

    def __init__(self, repo: Repository, timeout: float = TIMEOUT_S) -> None:
        self.repo = repo
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirect())

    def request(self, method: str, url: str, *, data: bytes | None = None,
                headers: dict[str, str] | None = None,
                ok: tuple[int, ...] = (200,)) -> HTTPResponse:
        """Send one request; the open response if its status is in `ok` (the caller reads
        and closes it), else RegistryError. A relative `url` resolves against the registry."""
        url = urllib.parse.urljoin(self.repo.base + "/", url)
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"User-Agent": USER_AGENT, **(headers or {})})
        if data is not None:
            req.add_header("Content-Length", str(len(data)))
        try:
            reply: HTTPResponse = self._opener.open(req, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            if exc.code in ok:
                return exc  # type: ignore[return-value]  # an HTTPError is a response too
            with exc:
                body = _read_error_body(exc)
            raise self._status_error(exc.code, body) from None
        except (urllib.error.URLError, OSError, HTTPException) as exc:
            raise self._transport_error(exc) from None
        if reply.status not in ok:
            with reply:
                body = _read_error_body(reply)
            raise self._status_error(reply.status, body)
        return reply

    def _status_error(self, status: int, body: str) -> RegistryError:
        host = self.repo.host
        if status == 401:
            return RegistryError(f"registry {host} wants a login (401 unauthorized): trio-llm "
                                 "does not implement registry authentication", status)
        return RegistryError(f"registry {host}: {status}: {body or 'no details'}", status)

    def _transport_error(self, exc: BaseException) -> RegistryError:
        reason: Any = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        host, scheme = self.repo.host, self.repo.scheme
        where = f"registry {scheme}://{host}"
        if isinstance(reason, ConnectionRefusedError):
            text = f"connection refused by {where}: is a registry listening there?"
        elif isinstance(reason, socket.gaierror):
            text = f"cannot resolve the host of {where}: {reason.strerror or reason}"
        elif isinstance(reason, TimeoutError | socket.timeout):
            text = f"{where} did not answer within {self.timeout:g} s"
        elif isinstance(reason, ssl.SSLError):
            hint = " (an HTTP-only registry needs --insecure)" if scheme == "https" else ""
            text = f"TLS failure talking to {where}: {reason}{hint}"
        elif isinstance(reason, OSError):
            text = f"cannot reach {where}: {reason.strerror or reason}"
        else:
            text = f"cannot reach {where}: {reason}"
        return RegistryError(text)

    def transport_error(self, exc: BaseException) -> RegistryError:
        """A failure while reading a body that had already started, as RegistryError."""
        return self._transport_error(exc)


def _read_error_body(reply: Any) -> str:
    """A registry's error answer as one short line: `CODE: message` from its JSON if it has one."""
    try:
        raw = reply.read(64 << 10)
    except (OSError, HTTPException):
        return ""
    text = raw.decode("utf-8", "replace").strip()
    try:
        errors = json.loads(text).get("errors")
        first = errors[0]
        return f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    except (ValueError, AttributeError, IndexError, KeyError, TypeError):
        return " ".join(text.split())[:300]


ACCEPT_MANIFEST = {"Accept": MANIFEST_V2}
