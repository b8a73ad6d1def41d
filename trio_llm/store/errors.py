"""Every error the model store raises, as types the HTTP layer maps to status codes in one place.

Messages follow Ollama's wording so clients that match on them keep working. Suggested mapping:
InvalidRequest and its subclasses (InvalidName, InvalidDigest, InvalidModelfile, InvalidParameter,
NotGGUF, DigestMismatch, QuantizationNotSupported) -> 400; ModelNotFound, BlobNotFound -> 404;
everything else (PullError, CorruptStore) -> 500, or a final `{"error": ...}` line in a stream.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of every store error; `str(err)` is the message to show the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidRequest(StoreError):
    """The caller asked for something malformed (HTTP 400)."""


class InvalidName(InvalidRequest):
    """A model name that is not `[host/][namespace/]model[:tag]` with safe characters."""

    def __init__(self, name: str, message: str = "invalid model name") -> None:
        super().__init__(message)
        self.name = name


class InvalidDigest(InvalidRequest):
    """A blob digest that is not `sha256:<64 hex>` (or `sha256-<64 hex>`)."""

    def __init__(self, digest: str) -> None:
        super().__init__("invalid digest format")
        self.digest = digest


class InvalidModelfile(InvalidRequest):
    """A Modelfile that does not parse; `line` is 1-based, or 0 when not tied to a line."""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(f"(line {line}): {message}" if line else message)
        self.line = line
        self.reason = message


class InvalidParameter(InvalidRequest):
    """A PARAMETER / `parameters` entry with an unknown name or a value of the wrong type."""


class NotGGUF(InvalidRequest):
    """A model file that is not a readable GGUF file."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("supplied file was not in GGUF format")
        self.detail = detail


class DigestMismatch(InvalidRequest):
    """Bytes that do not hash to the digest they were promised under; nothing was stored."""

    def __init__(self, expected: str, got: str) -> None:
        super().__init__(f'digest mismatch, expected "{expected}", got "{got}"')
        self.expected = expected
        self.got = got


class QuantizationNotSupported(InvalidRequest):
    """`quantize` was requested; the hook for our quantizer (another piece of work) is not wired."""

    def __init__(self, target: str) -> None:
        super().__init__(f"quantization to {target} is not supported yet")
        self.target = target


class ModelNotFound(StoreError):
    """No manifest under this name (HTTP 404). `copy` quotes with double quotes, as Ollama does."""

    def __init__(self, name: str, quote: str = "'") -> None:
        super().__init__(f"model {quote}{name}{quote} not found")
        self.name = name


class BlobNotFound(StoreError):
    """A digest that has no blob in the store (HTTP 404)."""

    def __init__(self, digest: str) -> None:
        super().__init__(f'blob "{digest}" not found')
        self.digest = digest


class CorruptStore(StoreError):
    """A manifest that does not parse or points at a missing blob (HTTP 500)."""


class PullError(StoreError):
    """A catalog fetch failed: pip could not download, or the bytes were not what we expected."""


class UnknownRemoteModel(PullError):
    """A pull of a name that no source we know of offers."""

    def __init__(self, name: str) -> None:
        super().__init__("pull model manifest: file does not exist")
        self.name = name


# The issue names this "CorruptBlob / DigestMismatch": the same failure, two spellings.
CorruptBlob = DigestMismatch
