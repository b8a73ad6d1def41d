"""Pull: fetch a manifest from a registry, download the blobs the store lacks, store the manifest.

`GET manifests/<tag>` (404: `pull model manifest: file does not exist`), then for each layer and
the config a `GET blobs/<digest>` streamed into the store's blob writer: bytes go to a locked
temporary while being hashed, and become the blob only when the hash is right (`verifying
sha256 digest`), one blob at a time, so a pull holds at most one file open whatever the manifest
lists. An error, a mismatch or a cancelled pull (the client left) leaves no temporary; blobs
already verified stay pinned until the manifest is written, then belong to it (or, if the pull
failed, to the next prune). The manifest is stored byte for byte as received, last, so a pull
killed at any point leaves a store whose every manifest has all its blobs. Progress, as
Ollama: `pulling manifest`, `pulling <12hex>` {digest,total,completed}, `verifying sha256
digest`, `writing manifest`, `success`.

This is an async generator on trio: network waits are cancellable and under the client's
deadlines; file work (writes, hashing, fsync) goes through `trio.to_thread`, one short hop per
chunk, so no worker thread waits on the network.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import trio

from trio_llm.registry.client import ACCEPT_MANIFEST, Client, RegistryError, Repository
from trio_llm.store.blobs import BlobWriter
from trio_llm.store.errors import CorruptStore, DigestMismatch, PullError, UnknownRemoteModel
from trio_llm.store.manifests import MAX_MANIFEST_BYTES, Layer, Manifest
from trio_llm.store.names import DEFAULT_HOST, ModelName, parse_name
from trio_llm.store.progress import Progress, Throttle, status, transfer

if TYPE_CHECKING:
    from trio_llm.store.store import Store

WRITE_CHUNK = 4 << 20    # bytes handed to the writer thread at a time
MAX_LAYERS = 1024        # real models have a handful; a manifest of thousands is an attack


def is_registry_name(name: str) -> bool:
    """Whether `name` comes from its registry rather than the built-in catalog: anything but
    a catalog model on the default host spelled without a scheme."""
    from trio_llm.store.catalog import lookup
    parsed = parse_name(name)
    explicit_scheme = name.lower().startswith(("http://", "https://"))
    return not (lookup(parsed) is not None and parsed.host.lower() == DEFAULT_HOST
                and not explicit_scheme)


async def pull_from_registry(store: Store, name: str, *, insecure: bool = False,
                             **timeouts: Any) -> AsyncIterator[Progress]:
    """Pull `name` from its registry into `store`; see the module docstring. `timeouts` are
    the Client's (idle_timeout, total_timeout)."""
    parsed = parse_name(name)
    repo = Repository.of(parsed, name, insecure)
    async with Client(repo, **timeouts) as client:
        yield status("pulling manifest")
        raw, manifest = await _fetch_manifest(client, parsed)
        with store.pins() as pins:
            for layer in (*manifest.layers, manifest.config):
                pins.add(layer.digest)
                if await trio.to_thread.run_sync(_present, store, layer):
                    yield transfer("pulling", layer.digest, layer.size, layer.size)
                    continue
                async with aclosing(_download(client, store, layer)) as reports:
                    async for report in reports:
                        yield report
            yield status("verifying sha256 digest")
            yield status("writing manifest")
            # checks every blob is in place
            await trio.to_thread.run_sync(lambda: store.write_manifest(parsed, manifest, raw=raw))
    yield status("success")


def _present(store: Store, layer: Layer) -> bool:
    return store.has_blob(layer.digest) and store.blobs.size(layer.digest) == layer.size


async def _fetch_manifest(client: Client, name: ModelName) -> tuple[bytes, Manifest]:
    url = client.repo.manifest_url(name.tag)
    try:
        reply = await client.request("GET", url, headers=ACCEPT_MANIFEST,
                                     max_body=MAX_MANIFEST_BYTES)
    except RegistryError as exc:
        if exc.status == 404:
            raise UnknownRemoteModel(name.display) from None
        if exc.status == 0 and name.host.lower() == DEFAULT_HOST:
            raise PullError(f"pull model manifest: file does not exist: {name.display} is not "
                            "in trio-llm's built-in catalog and its registry cannot be reached: "
                            f"{exc}") from None
        raise PullError(f"pull model manifest: {exc}") from None
    raw = reply.body
    if len(raw) > MAX_MANIFEST_BYTES:
        raise PullError(f"pull model manifest: the manifest of {name.display} is too large")
    try:
        manifest = Manifest.parse(raw)
    except CorruptStore as exc:
        raise PullError(f"pull model manifest: {client.repo.host} sent an unusable manifest: "
                        f"{exc}") from None
    if len(manifest.layers) > MAX_LAYERS:
        raise PullError(f"pull model manifest: the manifest of {name.display} lists "
                        f"{len(manifest.layers)} layers (at most {MAX_LAYERS})")
    return raw, manifest


async def _download(client: Client, store: Store, layer: Layer) -> AsyncIterator[Progress]:
    """Stream one blob into a writer, verify it and make it visible; report progress about
    every 60 ms. The writer (one open file) is closed before the next blob starts."""
    yield transfer("pulling", layer.digest, layer.size, 0)
    throttle = Throttle()
    writer: BlobWriter = await trio.to_thread.run_sync(store.blob_writer, layer.digest)
    try:
        async with client.stream("GET", client.repo.blob_url(layer.digest)) as reply:
            pending = bytearray()
            async with aclosing(client.chunks(reply)) as pieces:
                async for piece in pieces:
                    pending += piece
                    if writer.size + len(pending) > layer.size:
                        raise PullError(f"blob {layer.digest}: the registry sent more than "
                                        f"the {layer.size} bytes the manifest says")
                    if len(pending) >= WRITE_CHUNK:
                        await trio.to_thread.run_sync(writer.write, bytes(pending))
                        pending.clear()
                    if throttle.ready() and writer.size < layer.size:
                        yield transfer("pulling", layer.digest, layer.size, writer.size)
            if pending:
                await trio.to_thread.run_sync(writer.write, bytes(pending))
        if writer.size != layer.size:
            raise PullError(f"blob {layer.digest}: the download ended after {writer.size} of "
                            f"{layer.size} bytes")
        try:
            await trio.to_thread.run_sync(writer.commit)
        except DigestMismatch as exc:
            raise PullError("digest mismatch, file must be downloaded again: "
                            f"want {exc.expected}, got {exc.got}") from None
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(writer.__exit__, None, None, None)
    yield transfer("pulling", layer.digest, layer.size, layer.size)
