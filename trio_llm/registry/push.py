"""Push: upload every blob of a stored model that the registry lacks, then its manifest.

For each layer and the config: `HEAD blobs/<digest>`; if absent, `POST blobs/uploads/`, send the
blob in `PATCH` chunks (each answer gives the next upload location), finish with
`PUT <location>?digest=<digest>`. Last, `PUT manifests/<tag>` with the exact bytes the store
holds, so the registry's manifest digest is the local model's digest. Progress, as Ollama:
`retrieving manifest`, `pushing <12hex>` {digest,total,completed}, `pushing manifest`, `success`.
A blob the registry already has is reported once, complete, and not uploaded.

An async generator on trio, like pull: the network waits are cancellable and under the
client's deadlines; each chunk is read from the blob file in a worker thread, one file open at
a time.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, BinaryIO

import trio

from trio_llm.registry.client import Client, RegistryError, Reply, Repository
from trio_llm.store.manifests import MANIFEST_V2, Layer
from trio_llm.store.names import parse_name
from trio_llm.store.progress import Progress, Throttle, status, transfer

if TYPE_CHECKING:
    from trio_llm.store.store import Store

CHUNK = 8 << 20    # bytes per PATCH: progress advances per chunk


async def push(store: Store, name: str, *, insecure: bool = False,
               **timeouts: Any) -> AsyncIterator[Progress]:
    """Push the stored model `name` to the registry its host names. ModelNotFound if there is
    no such model, RegistryError if the registry fails or refuses. `timeouts` are the
    Client's (idle_timeout, total_timeout)."""
    stored = await trio.to_thread.run_sync(
        lambda: store.manifests.read(parse_name(name), shown=name))
    repo = Repository.of(stored.name, name, insecure)
    async with Client(repo, **timeouts) as client:
        yield status("retrieving manifest")
        with store.pins() as pins:
            pins.add(*stored.manifest.digests)
            for layer in (*stored.manifest.layers, stored.manifest.config):
                async with aclosing(_push_blob(store, client, layer)) as reports:
                    async for report in reports:
                        yield report
        yield status("pushing manifest")
        await client.request("PUT", repo.manifest_url(stored.name.tag), content=stored.raw,
                             headers={"Content-Type": MANIFEST_V2}, ok=(200, 201))
    yield status("success")


async def blob_present(client: Client, digest: str) -> bool:
    """Whether the registry already holds the blob (`HEAD blobs/<digest>` answers 200)."""
    reply = await client.request("HEAD", client.repo.blob_url(digest), ok=(200, 404))
    return reply.status == 200


async def _push_blob(store: Store, client: Client, layer: Layer) -> AsyncIterator[Progress]:
    if await blob_present(client, layer.digest):
        yield transfer("pushing", layer.digest, layer.size, layer.size)
        return
    path = store.blob_path(layer.digest)
    location = _location(await client.request("POST", client.repo.uploads_url, content=b"",
                                              ok=(202,)))
    yield transfer("pushing", layer.digest, layer.size, 0)
    throttle = Throttle()
    sent = 0
    blob: BinaryIO = await trio.to_thread.run_sync(open, path, "rb")
    try:
        while chunk := await trio.to_thread.run_sync(blob.read, CHUNK):
            headers = {"Content-Type": "application/octet-stream",
                       "Content-Range": f"{sent}-{sent + len(chunk) - 1}"}
            location = _location(await client.request("PATCH", location, content=chunk,
                                                      headers=headers, ok=(202,)))
            sent += len(chunk)
            if throttle.ready() and sent < layer.size:
                yield transfer("pushing", layer.digest, layer.size, sent)
    finally:
        blob.close()
    if sent != layer.size:
        raise RegistryError(f"blob {layer.digest} has {sent} bytes, the manifest says "
                            f"{layer.size}")
    await client.request("PUT", _with_query(location, digest=layer.digest), content=b"",
                         ok=(201, 204))
    yield transfer("pushing", layer.digest, layer.size, layer.size)


def _location(reply: Reply) -> str:
    """Where the upload continues: Docker-Upload-Location or Location."""
    location = reply.headers.get("Docker-Upload-Location") or reply.headers.get("Location")
    if not location:
        raise RegistryError("the registry's upload answer has no Location")
    joined = urllib.parse.urljoin(reply.url, location)
    if urllib.parse.urlsplit(joined).scheme.lower() not in ("http", "https"):
        raise RegistryError("the registry's upload location is not http or https")
    return joined


def _with_query(url: str, **params: str) -> str:
    """`url` with `params` added to its query (upload locations carry their own state)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
