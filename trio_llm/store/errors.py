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
    InvalidModelfile,
    InvalidName,
    InvalidParameter,
    TrioLLMError,
)
from trio_llm.errors import ModelNotFound as _ModelNotFound

InvalidRequest = BadRequest


class StoreError(TrioLLMError):
    """Base of the errors only the store raises, so `except StoreError` catches the store's
    failures and nothing of the scheduler's (QueueFull) or the HTTP layer's. The ones a client
    caused are also BadRequest / NotFound, which decides their status."""

__all__ = [
    "BlobNotFound", "CorruptBlob", "CorruptStore", "DigestMismatch", "InvalidDigest",
    "InvalidModelfile", "InvalidName", "InvalidParameter", "InvalidRequest", "ModelNotFound",
    "NotGGUF", "PullError", "QuantizationNotSupported", "StoreError", "UnknownRemoteModel",
]


class NotGGUF(StoreError, InvalidRequest):
    """A model file that is not a readable GGUF file."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("supplied file was not in GGUF format")
        self.detail = detail


class QuantizationNotSupported(StoreError, InvalidRequest):
    """A `quantize` target we cannot produce, or a source we cannot quantize from (400)."""

    def __init__(self, target: str) -> None:
        super().__init__(f"quantization to {target} is not supported yet")
        self.target = target


class ModelNotFound(StoreError, _ModelNotFound):
    """No manifest under this name (HTTP 404). `copy` quotes with double quotes, as Ollama does."""

    def __init__(self, name: str, quote: str = "'") -> None:
        super().__init__(name, f"model {quote}{name}{quote} not found")


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
