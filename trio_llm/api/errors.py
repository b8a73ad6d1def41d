"""The one place that turns exceptions into HTTP answers: a status and `{"error": ...}`.

Ollama routes answer `{"error": "<message>"}`; /v1 routes answer OpenAI's
`{"error": {"message", "type", "param", "code"}}`; unknown paths and wrong methods get
`{"error": "404 page not found"}` / `405 method not allowed`. Anything unexpected is logged
with its traceback and answered 500 with a one-line message: a traceback never reaches a
client, and neither does a file-system path (an OSError is described by its errno alone:
ENAMETOOLONG is a 400, EMFILE/ENFILE a 503 to retry). A 503 carries Retry-After.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re

from quart import Quart, Response, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge

from trio_llm import errors
from trio_llm.api.streaming import json_response, ndjson_line, sse_event

log = logging.getLogger(__name__)

# Most specific first; the first class the error is an instance of decides.
STATUS: tuple[tuple[type[errors.TrioLLMError], int], ...] = (
    (errors.ServiceUnavailable, 503),
    (errors.Unauthorized, 401),
    (errors.Forbidden, 403),
    (errors.RequestCanceled, 499),
    (errors.NotFound, 404),
    (errors.BadRequest, 400),
    (errors.TrioLLMError, 500),
)

OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 404: "not_found_error"}
ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                   403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                   429: "rate_limit_error", 503: "overloaded_error"}
ANTHROPIC_PREFIX = "/v1/messages"
OS_ERROR_STATUS = {errno.ENAMETOOLONG: 400, errno.EMFILE: 503, errno.ENFILE: 503,
                   errno.ENOSPC: 507}
RETRY_AFTER_S = 1
# An absolute path with at least two parts, not part of a URL (`http://h/p` is left alone).
_PATH = re.compile(r"(?<![\w/:.~-])/(?:[^\s/'\"]+/)+[^\s'\"]*")


def scrubbed(message: str) -> str:
    """`message` with file-system paths replaced by `<path>`."""
    return _PATH.sub("<path>", message)


def _os_error(exc: OSError) -> tuple[int, str]:
    code = exc.errno if exc.errno is not None else 0
    text = exc.strerror or (os.strerror(code) if code else type(exc).__name__)
    return OS_ERROR_STATUS.get(code, 500), text


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
    if isinstance(exc, OSError):
        return _os_error(exc)
    return 500, scrubbed(str(exc)) or type(exc).__name__


def ollama_body(message: str) -> dict[str, str]:
    return {"error": message}


def openai_body(status: int, message: str) -> dict[str, object]:
    return {"error": {"message": message, "type": OPENAI_TYPES.get(status, "api_error"),
                      "param": None, "code": None}}


def anthropic_body(status: int, message: str) -> dict[str, object]:
    """Anthropic's error object: {"type": "error", "error": {"type", "message"}}."""
    return {"type": "error", "error": {"type": ANTHROPIC_TYPES.get(status, "api_error"),
                                       "message": message}}


def anthropic_stream_error(exc: BaseException) -> bytes:
    """The `error` event of an Anthropic stream that failed after it started."""
    status, message = status_and_message(exc)
    data = json.dumps(anthropic_body(status, message), separators=(",", ":"),
                      ensure_ascii=False)
    return f"event: error\ndata: {data}\n\n".encode()


def is_anthropic_path(path: str) -> bool:
    return path == ANTHROPIC_PREFIX or path.startswith(ANTHROPIC_PREFIX + "/")


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
        response = json_response(ollama_body(text), exc.code or 404)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response
    status, message = status_and_message(exc)
    if is_anthropic_path(request.path):
        response = json_response(anthropic_body(status, message), status)
    elif is_openai_path(request.path):
        response = json_response(openai_body(status, message), status)
    else:
        response = json_response(ollama_body(message), status)
    if status == 503:
        ours = explained(exc)
        response.headers["Retry-After"] = str(getattr(ours, "retry_after", RETRY_AFTER_S))
    elif status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def register(app: Quart) -> None:
    """Install the single error handler (it also sees HTTPExceptions, by class hierarchy)."""

    @app.errorhandler(Exception)
    async def handle(exc: Exception) -> Response:
        return error_response(exc)

