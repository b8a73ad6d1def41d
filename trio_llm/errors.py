"""The error types every layer raises; api/errors.py turns them into HTTP answers in one place.

Each message is worded the way Ollama words it, because clients (and people) match on them.
The classes carry no HTTP status: the mapping to status codes lives only in the API layer.
"""

from __future__ import annotations


class TrioLLMError(Exception):
    """Base of every error we expect and can explain to a client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class BadRequest(TrioLLMError):
    """The request is malformed or asks for something impossible (HTTP 400)."""


class InvalidName(BadRequest):
    """A model name that does not parse as `[host/][namespace/]model[:tag]`."""

    def __init__(self, name: str = "", message: str = "invalid model name") -> None:
        super().__init__(message)
        self.name = name


class InvalidDigest(BadRequest):
    """A blob digest that is not `sha256:<64 hex>`."""

    def __init__(self, digest: str) -> None:
        super().__init__("invalid digest format")
        self.digest = digest


class DigestMismatch(BadRequest):
    """Uploaded bytes that do not hash to the digest they were sent under."""

    def __init__(self, expected: str, got: str) -> None:
        super().__init__(f'digest mismatch, expected "{expected}", got "{got}"')
        self.expected = expected
        self.got = got


class InvalidModelfile(BadRequest):
    """A Modelfile that does not parse; `line` is 1-based, or 0 when not tied to a line."""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(f"(line {line}): {message}" if line else message)
        self.line = line
        self.reason = message


class InvalidParameter(BadRequest):
    """A PARAMETER / `parameters` entry with an unknown name or a value of the wrong type."""


class Unsupported(BadRequest):
    """The model lacks a capability the request needs (tools, insert, thinking, embedding...)."""


class ModelFileError(BadRequest):
    """A model file we cannot run: an unsupported architecture or tokenizer, missing tensors,
    or hyper-parameters that do not fit its tensors (said at create time and again at load)."""


class ContextOverflow(BadRequest):
    """Input longer than the context allows and truncation is off."""


class Unauthorized(TrioLLMError):
    """No API key, or one that is not valid, where the server wants one (HTTP 401)."""


class Forbidden(TrioLLMError):
    """A request the server refuses whoever asks: a key whose scope is too narrow (HTTP 403)."""


class NotFound(TrioLLMError):
    """Something named in the request does not exist (HTTP 404)."""


class ModelNotFound(NotFound):
    """A model that is not in the store."""

    def __init__(self, name: str, message: str | None = None) -> None:
        super().__init__(message if message is not None else f"model '{name}' not found")
        self.name = name


class BlobNotFound(NotFound):
    """A blob digest that is not in the store."""

    def __init__(self, digest: str) -> None:
        super().__init__(f'blob "{digest}" not found')
        self.digest = digest


class ServiceUnavailable(TrioLLMError):
    """The server cannot take the request now; the client may retry (HTTP 503), after
    `retry_after` seconds (the Retry-After header)."""

    retry_after = 1


class QueueFull(ServiceUnavailable):
    """More requests are waiting than OLLAMA_MAX_QUEUE allows (HTTP 503)."""

    def __init__(self) -> None:
        super().__init__("server busy, please try again.  maximum pending requests exceeded")


class RequestCanceled(TrioLLMError):
    """The client went away while its request waited (Ollama's 499)."""

    def __init__(self) -> None:
        super().__init__("request canceled")
