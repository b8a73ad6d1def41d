"""The store's errors: the shared types of trio_llm.errors plus those only the store raises.

Messages follow Ollama's wording so clients that match on them keep working; api/errors.py maps
every one of them to its HTTP status in one place.
"""

from __future__ import annotations

from trio_llm.errors import (
    BadRequest,
    BlobNotFound,
    DigestMismatch,
    InvalidDigest,
    InvalidName,
    TrioLLMError,
)
from trio_llm.errors import ModelNotFound as _ModelNotFound

StoreError = TrioLLMError
InvalidRequest = BadRequest

__all__ = [
    "BlobNotFound", "CorruptBlob", "CorruptStore", "DigestMismatch", "InvalidDigest",
    "InvalidModelfile", "InvalidName", "InvalidParameter", "InvalidRequest", "ModelNotFound",
    "NotGGUF", "PullError", "QuantizationNotSupported", "StoreError", "UnknownRemoteModel",
]


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


class QuantizationNotSupported(InvalidRequest):
    """`quantize` was requested; the hook for our quantizer (another piece of work) is not wired."""

    def __init__(self, target: str) -> None:
        super().__init__(f"quantization to {target} is not supported yet")
        self.target = target


class ModelNotFound(_ModelNotFound):
    """No manifest under this name (HTTP 404). `copy` quotes with double quotes, as Ollama does."""

    def __init__(self, name: str, quote: str = "'") -> None:
        super().__init__(name, f"model {quote}{name}{quote} not found")


class CorruptStore(TrioLLMError):
    """A manifest that does not parse or points at a missing blob (HTTP 500)."""


class PullError(TrioLLMError):
    """A catalog fetch failed: pip could not download, or the bytes were not what we expected."""


class UnknownRemoteModel(PullError):
    """A pull of a name that no source we know of offers."""

    def __init__(self, name: str) -> None:
        super().__init__("pull model manifest: file does not exist")
        self.name = name


# The issue names this "CorruptBlob / DigestMismatch": the same failure, two spellings.
CorruptBlob = DigestMismatch
