"""A small trio-native client of the Docker registry HTTP API v2, as Ollama's push and pull use it.

Requests go through httpx on trio, so everything that waits is cancellable: a client that
leaves cancels its pull at once, and no worker thread is held while a registry is slow.
Every wait has two deadlines: the idle one (TRIO_LLM_REGISTRY_IDLE_TIMEOUT: nothing received
or sent for that long) and the total one (TRIO_LLM_REGISTRY_TIMEOUT, for the whole pull or
push). HTTPS_PROXY / HTTP_PROXY / NO_PROXY are honoured as curl honours them. GET/HEAD
redirects (a registry sending blobs to a CDN) are followed, at most MAX_REDIRECTS, and only to
http or https. Bodies are read raw (no gzip decoding), error bodies and manifests only up to a
bound. Every failure becomes a `RegistryError` whose message names the registry.
"""

from __future__ import annotations

import json
import math
import platform
import ssl
import sys
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from trio_llm import __version__, config
from trio_llm.errors import BadRequest, TrioLLMError
from trio_llm.store.manifests import MANIFEST_V2
from trio_llm.store.names import ModelName

MAX_REDIRECTS = 10
MAX_ERROR_BODY = 64 << 10
USER_AGENT = (f"trio-llm/{__version__} ({platform.machine().lower()} {sys.platform}) "
              f"Python/{platform.python_version()}")
REDIRECTS = (301, 302, 303, 307, 308)


class RegistryError(TrioLLMError):
    """A registry could not be reached, or answered with an error (HTTP 500 to our client)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


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


@dataclass(frozen=True)
class Reply:
    """A registry answer whose (bounded) body has been read."""

    status: int
    headers: httpx.Headers
    url: str
    body: bytes


class Client:
    """Requests to one registry, each wait under the idle and the total deadline. Use it as
    `async with Client(repo) as client:` so its connections close with the operation."""

    def __init__(self, repo: Repository, *, idle_timeout: float | None = None,
                 total_timeout: float | None = None) -> None:
        self.repo = repo
        self.idle = idle_timeout if idle_timeout is not None else config.get(
            "TRIO_LLM_REGISTRY_IDLE_TIMEOUT")
        total = total_timeout if total_timeout is not None else config.get(
            "TRIO_LLM_REGISTRY_TIMEOUT")
        self.total = total
        self._deadline = trio.current_time() + total if math.isfinite(total) else math.inf
        self._http = httpx.AsyncClient(
            trust_env=True, follow_redirects=False, timeout=None,
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await self._http.aclose()

    # -- deadlines ------------------------------------------------------------------------

    @asynccontextmanager
    async def _limit(self) -> AsyncIterator[None]:
        """One wait: at most the idle timeout, and never past the total deadline."""
        left = self._deadline - trio.current_time()
        try:
            with trio.fail_after(max(0.0, min(self.idle, left))):
                yield
        except trio.TooSlowError:
            where = f"registry {self.repo.scheme}://{self.repo.host}"
            if self.idle < left:
                raise RegistryError(f"{where} sent nothing for {self.idle:g} s") from None
            raise RegistryError(f"{where}: the transfer did not finish within "
                                f"{self.total:g} s") from None

    # -- requests -------------------------------------------------------------------------

    @asynccontextmanager
    async def stream(self, method: str, url: str, *, content: bytes | None = None,
                     headers: dict[str, str] | None = None,
                     ok: tuple[int, ...] = (200,)) -> AsyncIterator[httpx.Response]:
        """Send one request and hold its answer open while the block reads it (`chunks`);
        RegistryError unless its status is in `ok`. A relative `url` resolves against the
        registry; GET/HEAD redirects are followed."""
        response = await self._send(method, url, content, headers or {})
        try:
            if response.status_code not in ok:
                body = await self._read(response, MAX_ERROR_BODY)
                raise self._status_error(response.status_code, _error_text(body))
            yield response
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await response.aclose()

    async def request(self, method: str, url: str, *, content: bytes | None = None,
                      headers: dict[str, str] | None = None, ok: tuple[int, ...] = (200,),
                      max_body: int = MAX_ERROR_BODY) -> Reply:
        """One whole request; the answer with up to `max_body` + 1 bytes of its body."""
        async with self.stream(method, url, content=content, headers=headers, ok=ok) as reply:
            body = await self._read(reply, max_body + 1)
            return Reply(reply.status_code, reply.headers, str(reply.url), body)

    async def chunks(self, response: httpx.Response) -> AsyncIterator[bytes]:
        """The raw body as it arrives (no decoding), each piece under the deadlines."""
        pieces = response.aiter_raw()
        try:
            while True:
                try:
                    async with self._limit():
                        piece = await pieces.__anext__()
                except StopAsyncIteration:
                    return
                except (httpx.HTTPError, OSError) as exc:
                    raise self._transport_error(exc) from None
                if piece:
                    yield piece
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await pieces.aclose()

    async def _read(self, response: httpx.Response, limit: int) -> bytes:
        data = bytearray()
        async with aclosing(self.chunks(response)) as pieces:
            async for piece in pieces:
                data += piece
                if len(data) >= limit:
                    break
        return bytes(data[:limit])

    async def _send(self, method: str, url: str, content: bytes | None,
                    headers: dict[str, str]) -> httpx.Response:
        url = urllib.parse.urljoin(self.repo.base + "/", url)
        for _ in range(MAX_REDIRECTS + 1):
            request = self._http.build_request(method, url, content=content, headers=headers)
            try:
                async with self._limit():
                    response = await self._http.send(request, stream=True)
            except (httpx.HTTPError, OSError) as exc:
                raise self._transport_error(exc) from None
            if response.status_code not in REDIRECTS or method not in ("GET", "HEAD"):
                return response
            location = response.headers.get("Location", "")
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await response.aclose()
            url = urllib.parse.urljoin(url, location)
            scheme = urllib.parse.urlsplit(url).scheme.lower()
            if not location or scheme not in ("http", "https"):
                raise RegistryError(f"registry {self.repo.host} redirected to a URL that is not "
                                    f"http or https: {url[:200]}")
        raise RegistryError(f"registry {self.repo.host} redirected more than {MAX_REDIRECTS} "
                            "times")

    # -- errors ---------------------------------------------------------------------------

    def _status_error(self, status: int, body: str) -> RegistryError:
        host = self.repo.host
        if status == 401:
            return RegistryError(f"registry {host} wants a login (401 unauthorized): trio-llm "
                                 "does not implement registry authentication", status)
        return RegistryError(f"registry {host}: {status}: {body or 'no details'}", status)

    def _transport_error(self, exc: BaseException) -> RegistryError:
        host, scheme = self.repo.host, self.repo.scheme
        where = f"registry {scheme}://{host}"
        causes = list(_causes(exc))
        text = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.ProxyError):
            text = f"the proxy refused or failed to reach {where}: {exc}"
        elif isinstance(exc, httpx.ConnectError) and (
                any(isinstance(c, ConnectionRefusedError) for c in causes)
                or "refused" in text.lower()):
            text = f"connection refused by {where}: is a registry listening there?"
        elif isinstance(exc, httpx.ConnectError) and (
                "name or service" in text.lower() or "nodename" in text.lower()
                or "getaddrinfo" in text.lower() or "name resolution" in text.lower()):
            text = f"cannot resolve the host of {where}: {text}"
        elif isinstance(exc, httpx.TimeoutException):
            text = f"{where} did not answer within {self.idle:g} s"
        elif any(isinstance(c, ssl.SSLError) for c in causes) or "ssl" in text.lower():
            hint = " (an HTTP-only registry needs --insecure)" if scheme == "https" else ""
            text = f"TLS failure talking to {where}: {text}{hint}"
        else:
            text = f"cannot reach {where}: {text}"
        return RegistryError(text)

    def transport_error(self, exc: BaseException) -> RegistryError:
        """A failure while reading a body that had already started, as RegistryError."""
        return self._transport_error(exc)


def _causes(exc: BaseException, depth: int = 0) -> list[BaseException]:
    """`exc`, what caused it, and the members of any exception group among them."""
    if depth > 8:
        return []
    found = [exc]
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found += _causes(inner, depth + 1)
    cause = exc.__cause__ or exc.__context__
    if cause is not None:
        found += _causes(cause, depth + 1)
    return found


def _error_text(raw: bytes) -> str:
    """A registry's error answer as one short line: `CODE: message` from its JSON if it has one."""
    text = raw.decode("utf-8", "replace").strip()
    try:
        errors: Any = json.loads(text).get("errors")
        first = errors[0]
        return f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    except (ValueError, AttributeError, IndexError, KeyError, TypeError, RecursionError):
        return " ".join(text.split())[:300]


ACCEPT_MANIFEST = {"Accept": MANIFEST_V2}
