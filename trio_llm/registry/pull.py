"""Pull: fetch a manifest from a registry, download the blobs the store lacks, store the manifest.

`GET manifests/<tag>` (404: `pull model manifest: file does not exist`), then for each layer and
the config a `GET blobs/<digest>` streamed into the store's blob writer: bytes go to a locked
temporary while being hashed and become the blob only when `verifying sha256 digest` finds the
hash right, so an error, a mismatch or a cancelled pull (the generator closed) leaves no blob.
The manifest is stored byte for byte as received. Progress, as Ollama: `pulling manifest`,
`pulling <12hex>` {digest,total,completed}, `verifying sha256 digest`, `writing manifest`,
`success`.

`pull` is also the dispatcher /api/pull uses: catalog names on the default host keep coming from
the built-in catalog (PyPI wheels); every other name goes to its registry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from trio_llm.registry.client import ACCEPT_MANIFEST, Client, RegistryError, Repository
from trio_llm.store.blobs import BlobWriter
from trio_llm.store.errors import CorruptStore, DigestMismatch, PullError, UnknownRemoteModel
from trio_llm.store.manifests import MAX_MANIFEST_BYTES, Layer, Manifest
from trio_llm.store.names import DEFAULT_HOST, ModelName, parse_name
from trio_llm.store.progress import Progress, ProgressStream, Throttle, status, transfer

if TYPE_CHECKING:
    from trio_llm.store.store import Store

CHUNK = 1 << 20    # bytes per read of a blob download


def pull(store: Store, name: str, *, insecure: bool = False) -> ProgressStream[ModelName]:
    """Pull `name`: from the built-in catalog when it is one of its models on the default host
    (and no scheme was spelled out), else from the registry its host names."""
    from trio_llm.store.catalog import lookup
    parsed = parse_name(name)
    explicit_scheme = name.lower().startswith(("http://", "https://"))
    if lookup(parsed) is not None and parsed.host.lower() == DEFAULT_HOST and not explicit_scheme:
        return (yield from store.pull(name))
    return (yield from pull_from_registry(store, name, insecure=insecure))


def pull_from_registry(store: Store, name: str, *, insecure: bool = False
                       ) -> ProgressStream[ModelName]:
    """Pull `name` from its registry into `store`; see the module docstring."""
    parsed = parse_name(name)
    repo = Repository.of(parsed, name, insecure)
    client = Client(repo)
    yield status("pulling manifest")
    raw, manifest = _fetch_manifest(client, parsed)
    with store.pins() as pins, contextlib.ExitStack() as writers:
        fetched: list[BlobWriter] = []
        for layer in (*manifest.layers, manifest.config):
            pins.add(layer.digest)
            if store.has_blob(layer.digest) and store.blobs.size(layer.digest) == layer.size:
                yield transfer("pulling", layer.digest, layer.size, layer.size)
                continue
            writer = writers.enter_context(store.blob_writer(layer.digest))
            yield from _download(client, layer, writer)
            fetched.append(writer)
        yield status("verifying sha256 digest")
        for writer in fetched:
            try:
                writer.commit()
            except DigestMismatch as exc:
                raise PullError("digest mismatch, file must be downloaded again: "
                                f"want {exc.expected}, got {exc.got}") from None
        yield status("writing manifest")
        store.write_manifest(parsed, manifest, raw=raw)   # checks every blob is in place
    yield status("success")
    return store.resolve(name)


def _fetch_manifest(client: Client, name: ModelName) -> tuple[bytes, Manifest]:
    url = client.repo.manifest_url(name.tag)
    try:
        reply = client.request("GET", url, headers=ACCEPT_MANIFEST)
    except RegistryError as exc:
        if exc.status == 404:
            raise UnknownRemoteModel(name.display) from None
        if exc.status == 0 and name.host.lower() == DEFAULT_HOST:
            raise PullError(f"pull model manifest: file does not exist: {name.display} is not "
                            "in trio-llm's built-in catalog and its registry cannot be reached: "
                            f"{exc}") from None
        raise PullError(f"pull model manifest: {exc}") from None
    with reply:
        try:
            raw = reply.read(MAX_MANIFEST_BYTES + 1)
        except OSError as exc:
            raise client.transport_error(exc) from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise PullError(f"pull model manifest: the manifest of {name.display} is too large")
    try:
        manifest = Manifest.parse(raw)
    except CorruptStore as exc:
        raise PullError(f"pull model manifest: {client.repo.host} sent an unusable manifest: "
                        f"{exc}") from None
    return raw, manifest


def _download(client: Client, layer: Layer, writer: BlobWriter) -> Iterator[Progress]:
    """Stream one blob into `writer` (uncommitted), reporting progress about every 60 ms."""
    yield transfer("pulling", layer.digest, layer.size, 0)
    throttle = Throttle()
    with client.request("GET", client.repo.blob_url(layer.digest)) as reply:
        while True:
            try:
                data = reply.read(CHUNK)
            except OSError as exc:
                raise client.transport_error(exc) from None
            if not data:
                break
            writer.write(data)
            if writer.size > layer.size:
                raise PullError(f"blob {layer.digest}: the registry sent more than the "
                                f"{layer.size} bytes the manifest says")
            if throttle.ready() and writer.size < layer.size:
                yield transfer("pulling", layer.digest, layer.size, writer.size)
    if writer.size != layer.size:
        raise PullError(f"blob {layer.digest}: the download ended after {writer.size} of "
                        f"{layer.size} bytes")
    yield transfer("pulling", layer.digest, layer.size, layer.size)

