"""The one place that turns exceptions into HTTP answers: a status and `{"error": ...}`.

Ollama routes answer `{"error": "<message>"}`; /v1 routes answer OpenAI's
`{"error": {"message", "type", "param", "code"}}`. Unknown paths and wrong methods get Ollama's
plain-text 404/405. Anything unexpected is logged with its traceback and answered 500 with a
one-line message: a traceback never reaches a client.
"""

from __future__ import annotations

import logging

from quart import Quart, Response, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge

from trio_llm import errors
from trio_llm.api.streaming import json_response, ndjson_line, sse_event

log = logging.getLogger(__name__)

# Most specific first; the first class the error is an instance of decides.
STATUS: tuple[tuple[type[errors.TrioLLMError], int], ...] = (
    (errors.ServiceUnavailable, 503),
    (errors.RequestCanceled, 499),
    (errors.NotFound, 404),
    (errors.BadRequest, 400),
    (errors.TrioLLMError, 500),
)

OPENAI_TYPES = {400: "invalid_request_error", 404: "not_found_error"}


def explained(exc: BaseException) -> errors.TrioLLMError | None:
    """Our own error inside `exc` (looking through exception groups), if there is one."""
    if isinstance(exc, errors.TrioLLMError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = explained(inner)
            if found is not None:
                return found
    return None


def status_and_message(exc: BaseException) -> tuple[int, str]:
    """HTTP status and client-facing message for any exception (logging the unexpected)."""
    ours = explained(exc)
    if ours is not None:
        status = next(code for cls, code in STATUS if isinstance(ours, cls))
        return status, ours.message
    if isinstance(exc, RequestEntityTooLarge):
        return 413, "request body too large"
    if isinstance(exc, HTTPException):
        return exc.code or 500, exc.description or exc.name
    log.error("internal error answering a request", exc_info=exc)
    return 500, str(exc) or type(exc).__name__


def ollama_body(message: str) -> dict[str, str]:
    return {"error": message}


def openai_body(status: int, message: str) -> dict[str, object]:
    return {"error": {"message": message, "type": OPENAI_TYPES.get(status, "api_error"),
                      "param": None, "code": None}}


def ndjson_error(exc: BaseException) -> bytes:
    """The last line of an NDJSON stream that failed after it started."""
    return ndjson_line(ollama_body(status_and_message(exc)[1]))


def sse_error(exc: BaseException) -> bytes:
    """The last event of an SSE stream that failed after it started."""
    status, message = status_and_message(exc)
    return sse_event(openai_body(status, message))


def is_openai_path(path: str) -> bool:
    return path.startswith("/v1/")


def error_response(exc: BaseException) -> Response:
    """The answer for an error raised before a response started."""
    if isinstance(exc, NotFound | MethodNotAllowed) and explained(exc) is None:
        text = "404 page not found" if isinstance(exc, NotFound) else "405 method not allowed"
        response = Response(text, status=exc.code, content_type="text/plain")
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response
    status, message = status_and_message(exc)
    if is_openai_path(request.path):
        return json_response(openai_body(status, message), status)
    return json_response(ollama_body(message), status)


def register(app: Quart) -> None:
    """Install the single error handler (it also sees HTTPExceptions, by class hierarchy)."""

    @app.errorhandler(Exception)
    async def handle(exc: Exception) -> Response:
        return error_response(exc)

