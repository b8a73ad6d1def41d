"""Push: upload every blob of a stored model that the registry lacks, then its manifest.

For each layer and the config: `HEAD blobs/<digest>`; if absent, `POST blobs/uploads/`, send the
blob in `PATCH` chunks (each answer gives the next upload location), finish with
`PUT <location>?digest=<digest>`. Last, `PUT manifests/<tag>` with the exact bytes the store
holds, so the registry's manifest digest is the local model's digest. Progress, as Ollama:
`retrieving manifest`, `pushing <12hex>` {digest,total,completed}, `pushing manifest`, `success`.
A blob the registry already has is reported once, complete, and not uploaded.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from typing import TYPE_CHECKING

from trio_llm.registry.client import Client, RegistryError, Repository
from trio_llm.store.manifests import MANIFEST_V2, Layer
from trio_llm.store.names import parse_name
from trio_llm.store.progress import Progress, ProgressStream, Throttle, status, transfer

if TYPE_CHECKING:
    from trio_llm.store.store import Store

CHUNK = 8 << 20    # bytes per PATCH: progress advances per chunk


def push(store: Store, name: str, *, insecure: bool = False) -> ProgressStream[str]:
    """Push the stored model `name` to the registry its host names; returns the manifest's
    digest (`sha256:<hex>`). ModelNotFound if there is no such model, RegistryError if the
    registry fails or refuses."""
    stored = store.manifests.read(parse_name(name), shown=name)
    repo = Repository.of(stored.name, name, insecure)
    client = Client(repo)
    yield status("retrieving manifest")
    with store.pins() as pins:
        pins.add(*stored.manifest.digests)
        for layer in (*stored.manifest.layers, stored.manifest.config):
            yield from _push_blob(store, client, layer)
    yield status("pushing manifest")
    reply = client.request("PUT", repo.manifest_url(stored.name.tag), data=stored.raw,
                           headers={"Content-Type": MANIFEST_V2}, ok=(200, 201))
    with reply:
        reply.read()
    yield status("success")
    return "sha256:" + stored.digest


def blob_present(client: Client, digest: str) -> bool:
    """Whether the registry already holds the blob (`HEAD blobs/<digest>` answers 200)."""
    with client.request("HEAD", client.repo.blob_url(digest), ok=(200, 404)) as reply:
        return reply.status == 200


def _push_blob(store: Store, client: Client, layer: Layer) -> Iterator[Progress]:
    if blob_present(client, layer.digest):
        yield transfer("pushing", layer.digest, layer.size, layer.size)
        return
    path = store.blob_path(layer.digest)
    with client.request("POST", client.repo.uploads_url, data=b"", ok=(202,)) as reply:
        location = _location(reply)
    yield transfer("pushing", layer.digest, layer.size, 0)
    throttle = Throttle()
    sent = 0
    with open(path, "rb") as blob:
        while chunk := blob.read(CHUNK):
            headers = {"Content-Type": "application/octet-stream",
                       "Content-Range": f"{sent}-{sent + len(chunk) - 1}"}
            with client.request("PATCH", location, data=chunk, headers=headers,
                                ok=(202,)) as reply:
                location = _location(reply)
            sent += len(chunk)
            if throttle.ready() and sent < layer.size:
                yield transfer("pushing", layer.digest, layer.size, sent)
    if sent != layer.size:
        raise RegistryError(f"blob {layer.digest} has {sent} bytes, the manifest says "
                            f"{layer.size}")
    finish = _with_query(location, digest=layer.digest)
    with client.request("PUT", finish, data=b"", ok=(201, 204)) as reply:
        reply.read()
    yield transfer("pushing", layer.digest, layer.size, layer.size)


def _location(reply: object) -> str:
    """Where the upload continues: Docker-Upload-Location or Location."""
    headers = reply.headers  # type: ignore[attr-defined]
    location = headers.get("Docker-Upload-Location") or headers.get("Location")
    if not location:
        raise RegistryError("the registry's upload answer has no Location")
    return urllib.parse.urljoin(reply.url, location)  # type: ignore[attr-defined]


def _with_query(url: str, **params: str) -> str:
    """`url` with `params` added to its query (upload locations carry their own state)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
