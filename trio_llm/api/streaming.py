"""JSON, NDJSON and SSE bodies: compact JSON like Go writes it, one object per line or event.

Streams are primed: the first item is fetched before the response starts, so an error that
happens before any output (queue full, unknown model) still becomes a proper HTTP status. An
error after that ends the stream with an error object, since the status line is already sent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import orjson
from quart import Response

from trio_llm.errors import TrioLLMError

log = logging.getLogger(__name__)

T = TypeVar("T")

NDJSON = "application/x-ndjson"
JSON = "application/json; charset=utf-8"
SSE = "text/event-stream"
SSE_DONE = b"data: [DONE]\n\n"


def dumps(obj: Any) -> str:
    """Compact JSON, keys in insertion order, UTF-8 kept as is (Go's encoding/json style)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(dumps(obj), status=status, content_type=JSON)


def vectors_response(obj: Any) -> Response:
    """Like json_response, for answers that hold numpy float32 vectors (embeddings): each is
    written with the shortest digits that read back as the same float32, as Go writes a
    []float32, by orjson (json.dumps would spend most of a batched embedding's time there)."""
    return Response(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), status=200,
                    content_type=JSON)


def empty_response(status: int = 200) -> Response:
    return Response(b"", status=status)


def ndjson_line(obj: Any) -> bytes:
    return (dumps(obj) + "\n").encode()


def sse_event(obj: Any) -> bytes:
    return ("data: " + dumps(obj) + "\n\n").encode()


class Primed(AsyncIterator[T]):
    """An async iterator whose first item was already fetched; closing it closes the source."""

    def __init__(self, source: AsyncIterator[T], first: T | None, empty: bool) -> None:
        self._source = source
        self._first = first
        self._pending = not empty
        self._exhausted = empty

    def __aiter__(self) -> Primed[T]:
        return self

    @property
    def first(self) -> T | None:
        """The first item (fetched before the response started), None if there was none."""
        return self._first

    async def __anext__(self) -> T:
        if self._pending:
            self._pending = False
            return self._first  # type: ignore[return-value]
        if self._exhausted:
            raise StopAsyncIteration
        return await self._source.__anext__()

    async def aclose(self) -> None:
        self._exhausted = True
        self._pending = False
        close = getattr(self._source, "aclose", None)
        if close is not None:
            await close()


async def prime(source: AsyncIterator[T]) -> Primed[T]:
    """Fetch the first item now, so errors raised before any output propagate to the caller."""
    try:
        first = await source.__anext__()
    except StopAsyncIteration:
        return Primed(source, None, empty=True)
    except BaseException:
        close = getattr(source, "aclose", None)
        if close is not None:
            await close()
        raise
    return Primed(source, first, empty=False)


def streamed(
    items: Primed[T],
    encode: Callable[[T], bytes | None],
    on_error: Callable[[BaseException], bytes],
    tail: Callable[[], bytes] | None = None,
) -> AsyncIterator[bytes]:
    """The response body: each item encoded, an error object if the source fails mid-way,
    then `tail` (for example SSE's [DONE]). The source is always closed, also on disconnect."""

    async def body() -> AsyncIterator[bytes]:
        try:
            async for item in items:
                data = encode(item)
                if data:
                    yield data
        except Exception as exc:  # the status line is gone: report in-band, keep serving
            if isinstance(exc, TrioLLMError):  # (on_error logs the unexpected ones)
                log.info("stream ended by an error: %s", exc)
            yield on_error(exc)
        else:
            if tail is not None:
                yield tail()
        finally:
            await items.aclose()

    return body()


def stream_response(body: AsyncIterator[bytes], content_type: str) -> Response:
    """A chunked, unbuffered response; never timed out (generations may run for hours)."""
    response = Response(body, status=200, content_type=content_type)
    response.timeout = None
    if content_type == SSE:
        response.headers["Cache-Control"] = "no-cache"
    return response
