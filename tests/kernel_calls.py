"""Small helpers for tests that call the C kernels directly through the status convention."""

from __future__ import annotations

from typing import Any

from trio_llm._kernels import ffi, lib


def pool_new(n_threads: int, flags: int = 0) -> Any:
    """A raw tl_pool handle the test frees itself with lib.tl_pool_free."""
    out = ffi.new("tl_pool **")
    assert lib.tl_pool_new(n_threads, flags, out) == lib.TL_OK
    return out[0]


def sized(call: Any, *args: Any) -> tuple[int, int]:
    """(status, value) of a tl_ call that writes an int64 to its last parameter (-1: unwritten)."""
    out = ffi.new("int64_t *", -1)
    return call(*args, out), int(out[0])


def size_of(call: Any, *args: Any) -> int:
    """The int64 a tl_ size call writes, asserting it succeeded."""
    status, value = sized(call, *args)
    assert status == lib.TL_OK, status
    return value
