"""Manifests: Ollama's OCI-style JSON under `manifests/<host>/<namespace>/<model>/<tag>`.

`Manifest` is the document (config + layers with Ollama's media types); `ManifestStore` finds
manifests case-insensitively, reads them, and writes them atomically. Paths are built only from
validated `ModelName` parts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from trio_llm.store.atomic import is_temporary, remove_dead_temporaries, write_atomic
from trio_llm.store.errors import CorruptStore, InvalidDigest, ModelNotFound
from trio_llm.store.names import ModelName, name_from_parts, parse_digest

log = logging.getLogger(__name__)

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG = "application/vnd.docker.container.image.v1+json"
_OLLAMA = "application/vnd.ollama.image."
MODEL = _OLLAMA + "model"
PROJECTOR = _OLLAMA + "projector"
ADAPTER = _OLLAMA + "adapter"
TEMPLATE = _OLLAMA + "template"
PROMPT = _OLLAMA + "prompt"          # legacy spelling of TEMPLATE
SYSTEM = _OLLAMA + "system"
PARAMS = _OLLAMA + "params"
MESSAGES = _OLLAMA + "messages"
LICENSE = _OLLAMA + "license"
DRAFT = _OLLAMA + "draft"

MAX_MANIFEST_BYTES = 4 << 20
_ANY_DIGEST = re.compile(r"sha256:[0-9a-fA-F]{64}")


def go_json(value: Any) -> bytes:
    """Compact JSON as Go's encoding/json writes it (no spaces, `<`, `>`, `&` escaped)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


@dataclass(frozen=True)
class Layer:
    """One entry of `layers` (or the `config`): what it is, its blob, its size."""

    media_type: str
    digest: str
    size: int
    source: str | None = None   # the `from` field: the model a layer was inherited from

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest,
                               "size": self.size}
        if self.source:
            out["from"] = self.source
        return out

    @classmethod
    def from_json(cls, raw: Any) -> Layer:
        if not isinstance(raw, dict):
            raise CorruptStore("manifest layer is not an object")
        media_type, digest, size = raw.get("mediaType"), raw.get("digest"), raw.get("size")
        if not isinstance(media_type, str) or not isinstance(size, int) or size < 0:
            raise CorruptStore("manifest layer lacks mediaType or size")
        try:
            digest = parse_digest(digest)
        except InvalidDigest:
            raise CorruptStore(f"manifest layer has an invalid digest {digest!r}") from None
        source = raw.get("from")
        return cls(media_type, digest, size, source if isinstance(source, str) else None)


@dataclass(frozen=True)
class Manifest:
    """A Docker distribution v2 manifest as Ollama uses it."""

    config: Layer
    layers: tuple[Layer, ...]

    def to_bytes(self) -> bytes:
        return go_json({"schemaVersion": 2, "mediaType": MANIFEST_V2,
                        "config": self.config.to_json(),
                        "layers": [layer.to_json() for layer in self.layers]})

    @classmethod
    def parse(cls, data: bytes) -> Manifest:
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CorruptStore(f"manifest is not JSON: {exc}") from None
        if not isinstance(raw, dict) or raw.get("schemaVersion") != 2:
            raise CorruptStore("manifest is not schema version 2")
        layers = raw.get("layers") or []
        if not isinstance(layers, list):
            raise CorruptStore("manifest layers is not a list")
        return cls(Layer.from_json(raw.get("config")), tuple(Layer.from_json(x) for x in layers))

    @property
    def size(self) -> int:
        """What Ollama reports as the model's size: every layer plus the config."""
        return self.config.size + sum(layer.size for layer in self.layers)

    @property
    def digests(self) -> set[str]:
        return {self.config.digest, *(layer.digest for layer in self.layers)}

    def layers_of(self, *media_types: str) -> list[Layer]:
        return [layer for layer in self.layers if layer.media_type in media_types]


def config_blob(*, family: str, families: list[str], model_type: str, file_type: str,
                layers: list[Layer], extra: dict[str, Any] | None = None) -> bytes:
    """The config blob (Ollama's ConfigV2): what `list` shows without opening the GGUF."""
    doc: dict[str, Any] = {"model_format": "gguf", "model_family": family,
                           "model_families": families, "model_type": model_type,
                           "file_type": file_type}
    doc.update({k: v for k, v in (extra or {}).items() if v})
    doc.update({"architecture": _go_arch(), "os": _go_os(),
                "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]}})
    return go_json(doc)


def _go_arch() -> str:
    machine = os.uname().machine.lower() if hasattr(os, "uname") else "amd64"
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _go_os() -> str:
    import sys
    return {"win32": "windows"}.get(sys.platform, sys.platform)


@dataclass
class StoredManifest:
    """A manifest as found on disk: its stored name spelling, bytes, digest and mtime."""

    name: ModelName
    path: Path
    raw: bytes
    manifest: Manifest
    mtime: float
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        self.digest = hashlib.sha256(self.raw).hexdigest()   # Ollama: hex of the file's bytes

    @property
    def modified_at(self) -> datetime:
        return datetime.fromtimestamp(self.mtime).astimezone()


class ManifestStore:
    """The `manifests/` folder of a store."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def find(self, name: ModelName) -> Path | None:
        """The path of the manifest for `name`, matching each part case-insensitively."""
        path = self.directory
        for part in name.parts:
            exact = path / part
            if exact.exists():
                path = exact
                continue
            match = _find_casefold(path, part)
            if match is None:
                return None
            path = match
        return path if path.is_file() else None

    def path_for(self, name: ModelName) -> Path:
        """Where to write `name`: the existing spelling if there is one, else the given one."""
        return self.find(name) or self.directory.joinpath(*name.parts)

    def read(self, name: ModelName, quote: str = "'", shown: str | None = None
             ) -> StoredManifest:
        """The manifest of `name`; ModelNotFound names it as `shown` (the caller's spelling)."""
        path = self.find(name)
        if path is None:
            raise ModelNotFound(shown or name.display, quote)
        return self._load(path)

    def _load(self, path: Path) -> StoredManifest:
        stored_name = name_from_parts(path.relative_to(self.directory).parts)
        if stored_name is None:
            raise CorruptStore(f"not a manifest path: {path}")
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_MANIFEST_BYTES + 1)
                mtime = os.fstat(f.fileno()).st_mtime
        except FileNotFoundError:
            raise ModelNotFound(stored_name.display) from None
        if len(raw) > MAX_MANIFEST_BYTES:
            raise CorruptStore(f"manifest {stored_name} is implausibly large")
        return StoredManifest(stored_name, path, raw, Manifest.parse(raw), mtime)

    def write(self, name: ModelName, data: bytes) -> Path:
        """Atomically write (or replace) the manifest for `name`; returns its path."""
        path = self.path_for(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)
        return path

    def delete(self, name: ModelName, shown: str | None = None) -> StoredManifest:
        stored = self.read(name, shown=shown)
        stored.path.unlink()
        self._remove_empty_parents(stored.path.parent)
        return stored

    def all(self) -> list[StoredManifest]:
        """Every readable manifest (`manifests/*/*/*/*`); unreadable ones are logged and skipped."""
        found = []
        if not self.directory.is_dir():
            return found
        for path in self.directory.glob("*/*/*/*"):
            parts = path.relative_to(self.directory).parts
            if not path.is_file() or name_from_parts(parts) is None:
                continue
            try:
                found.append(self._load(path))
            except (CorruptStore, ModelNotFound) as exc:
                log.warning("skipping manifest %s: %s", path, exc)
        return found

    def referenced_digests(self) -> set[str]:
        """Every digest any manifest file mentions, read leniently: a manifest we cannot parse
        (a newer schema, say) still protects its blobs from pruning."""
        found: set[str] = set()
        if not self.directory.is_dir():
            return found
        for path in self.directory.glob("*/*/*/*"):
            if path.is_file() and name_from_parts(path.relative_to(self.directory).parts):
                with contextlib.suppress(OSError):
                    text = path.read_bytes()[:MAX_MANIFEST_BYTES].decode("ascii", "replace")
                    found.update(m.lower() for m in _ANY_DIGEST.findall(text))
        return found

    def cleanup(self) -> list[Path]:
        """Remove abandoned temporaries and empty folders."""
        removed = remove_dead_temporaries(self.directory, recursive=True)
        if self.directory.is_dir():
            for dirpath, _dirs, _files in os.walk(self.directory, topdown=False):
                if Path(dirpath) != self.directory:
                    with contextlib.suppress(OSError):
                        os.rmdir(dirpath)   # fails, as it should, unless empty
        return removed

    def _remove_empty_parents(self, directory: Path) -> None:
        while directory != self.directory and self.directory in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent


def _find_casefold(directory: Path, part: str) -> Path | None:
    wanted = part.lower()
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return None
    for entry in entries:
        if entry.name.lower() == wanted and not is_temporary(entry.name):
            return Path(entry.path)
    return None
