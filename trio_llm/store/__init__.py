"""The model store: Ollama's layout under OLLAMA_MODELS, names, blobs, manifests, create, the
built-in catalog. The server and CLI use `Store`; the rest is exported for tests and tools."""

from __future__ import annotations

from trio_llm.formats.modelfile import Modelfile
from trio_llm.formats.modelfile import parse as parse_modelfile
from trio_llm.store.catalog import CATALOG, CatalogEntry, lookup
from trio_llm.store.create import CreateRequest, quantize
from trio_llm.store.errors import (
    BlobNotFound,
    CorruptBlob,
    CorruptStore,
    DigestMismatch,
    InvalidDigest,
    InvalidModelfile,
    InvalidName,
    InvalidParameter,
    InvalidRequest,
    ModelNotFound,
    NotGGUF,
    PullError,
    QuantizationNotSupported,
    StoreError,
    UnknownRemoteModel,
)
from trio_llm.store.manifests import Layer, Manifest
from trio_llm.store.names import ModelName, parse_digest, parse_name
from trio_llm.store.progress import Progress, drain
from trio_llm.store.records import ListEntry, ModelDetails, ModelRecord, ShowInfo, rfc3339
from trio_llm.store.store import Store, default_root

__all__ = [
    "CATALOG", "BlobNotFound", "CatalogEntry", "CorruptBlob", "CorruptStore", "CreateRequest",
    "DigestMismatch", "InvalidDigest", "InvalidModelfile", "InvalidName", "InvalidParameter",
    "InvalidRequest", "Layer", "ListEntry", "Manifest", "ModelDetails", "ModelName",
    "ModelNotFound", "ModelRecord", "Modelfile", "NotGGUF", "Progress", "PullError",
    "QuantizationNotSupported", "ShowInfo", "Store", "StoreError", "UnknownRemoteModel",
    "default_root", "drain", "lookup", "parse_digest", "parse_modelfile", "parse_name",
    "quantize", "rfc3339",
]
