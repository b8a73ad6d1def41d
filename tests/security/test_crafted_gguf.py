"""Crafted model files through the HTTP API: uploaded as blobs, offered to /api/create, shown.

Defect classes 1 (a tensor whose byte size wraps to 0 passes the bounds check, so a load reads
far past the mmap) and 7 (metadata arrays expanded into Python lists on every read: a 32 MiB
array cost ~560 MB; a million keys stayed cached). Each file is refused with a 400 before it
becomes a model, or shown within a bounded amount of memory; the server keeps serving and
nothing lands outside the store."""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import Callable

import pytest
import trio
from gguf import GGUFValueType

from tests.security.conftest import Secured, upload_blob
from tests.security.gguf_bytes import GGUFBytes, small_model
from tests.security.models import tiny_llama_f32


def with_shape(shape: tuple[int, ...]) -> bytes:
    """The small model with its first tensor given `shape` (rewritten table entry)."""
    model = small_model()
    data = bytearray(model.data)
    name = b"token_embd.weight"
    start = model.dims[0] - 4 - len(name) - 8
    end = model.dims[1] + 8 + 4 + 8
    entry = struct.pack("<Q", len(name)) + name + struct.pack("<I", len(shape))
    entry += b"".join(struct.pack("<Q", d) for d in shape) + struct.pack("<IQ", 0, 0)
    data[start:end] = entry
    return bytes(data)


def with_field(kind: str, index: int, value: int) -> bytes:
    model = small_model()
    data = bytearray(model.data)
    struct.pack_into("<Q", data, getattr(model, kind)[index], value)
    return bytes(data)


def with_big_array(model: bytes, n_bytes: int) -> bytes:
    """`model` (a valid GGUF, alignment 32) with one more key first: a UINT8 array of about
    `n_bytes` items, sized so the tensor data stays aligned."""
    key = b"blob"
    head = 8 + len(key) + 4 + 4 + 8
    n = n_bytes + (-(head + n_bytes) % 32)
    entry = struct.pack("<Q", len(key)) + key + struct.pack("<IIQ", GGUFValueType.ARRAY,
                                                             GGUFValueType.UINT8, n)
    data = bytearray(model)
    (n_kv,) = struct.unpack_from("<Q", data, 16)
    struct.pack_into("<Q", data, 16, n_kv + 1)
    return bytes(data[:24] + entry + bytes(n) + data[24:])


def with_many_keys(n: int) -> bytes:
    b = GGUFBytes()
    b.data += b"GGUF"
    b.u32(3)
    b.u64(0)
    b.u64(n)
    for i in range(n):
        b.string(f"k{i}")
        b.u32(GGUFValueType.UINT8)
        b.data += b"\0"
    return bytes(b.data)


REFUSED: list[tuple[str, Callable[[], bytes]]] = [
    ("element count wraps to 0", lambda: with_shape((4096, 1 << 52))),
    ("element count wraps past int64", lambda: with_shape((1 << 32, 1 << 32))),
    ("tensor larger than the file", lambda: with_shape((4096, 4096))),
    ("tensor count 2^63", lambda: with_field("counts", 0, 1 << 63)),
    ("key count 2^64-1", lambda: with_field("counts", 1, (1 << 64) - 1)),
    ("array count 2^31", lambda: with_field("counts", 2, 1 << 31)),
    ("string length 2^64-1", lambda: with_field("lengths", 0, (1 << 64) - 1)),
    ("dimension 2^63", lambda: with_field("dims", 1, 1 << 63)),
    ("tensor offset 2^64-1", lambda: with_field("offsets", 1, (1 << 64) - 1)),
    ("truncated", lambda: small_model().data[:300]),
    ("a million keys", lambda: with_many_keys(1 << 20)),
]


@pytest.mark.parametrize("case", [c for c, _ in REFUSED])
async def test_crafted_gguf_is_refused_at_create(secured: Secured, case: str) -> None:
    data = dict(REFUSED)[case]()
    async with secured.client() as http:
        digest = await upload_blob(http, data)
        reply = await http.post("/api/create", json={
            "model": "crafted", "files": {"model.gguf": digest}, "stream": False})
        assert reply.status_code == 400, (case, reply.text)
        assert "crafted" not in [m["name"].split(":")[0]
                                 for m in (await http.get("/api/tags")).json()["models"]]
    await secured.still_serving()
    secured.nothing_written_outside_the_store()


async def test_a_32_mib_metadata_array_costs_nothing_until_shown_and_show_is_bounded(
        secured: Secured, tmp_path_factory: pytest.TempPathFactory) -> None:
    tiny = tiny_llama_f32(tmp_path_factory.mktemp("amplified") / "tiny.gguf")
    data = with_big_array(tiny.read_bytes(), 32 << 20)
    async with secured.client() as http:
        digest = await upload_blob(http, data)
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            created = await http.post("/api/create", json={
                "model": "amplified", "files": {"model.gguf": digest}, "stream": False})
            shown = await http.post("/api/show", json={"model": "amplified"})
            verbose = await http.post("/api/show", json={"model": "amplified", "verbose": True})
            quantized = await http.post("/api/create", json={
                "model": "amplified-q", "from": "amplified", "quantize": "q8_0",
                "stream": False})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert created.status_code == 200, created.text
        assert shown.status_code == 200 and shown.json()["model_info"]["blob"] == []
        assert verbose.status_code == 200 and verbose.json()["model_info"]["blob"] == []
        assert quantized.status_code == 400 and "array items" in quantized.json()["error"]
        assert peak < 48 << 20, f"peak {peak >> 20} MiB for a 32 MiB array"
        with trio.fail_after(30):
            deleted = await http.request("DELETE", "/api/delete", json={"model": "amplified"})
            assert deleted.status_code == 200
    await secured.still_serving(generate=False)
    secured.nothing_written_outside_the_store()
