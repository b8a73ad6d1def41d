"""A recorded list of kernel calls, replayed in one C call (csrc/program/program.c).

A decode step is some hundreds of kernel calls; made one at a time from Python, each passes
through the interpreter and takes the GIL back when it returns. That Python time is serial
time the kernels wait for, and a server thread holding the GIL (a token on its way to a socket)
stalls the step. The network records a step's calls once (ops.Recorder) and runs them all
with `Program.run`, which holds no GIL: the recorded pointers are the network's own buffers and
KV cache, so a replay computes the same thing, bit for bit, over what they hold now."""

from __future__ import annotations

from typing import Any

from trio_llm._kernels import ffi, lib
from trio_llm.engine.kernels import check


class Program:
    """The calls, in order, with what each one is (for the error of the call that fails)."""

    def __init__(self) -> None:
        out = ffi.new("tl_program **")
        check(lib.tl_program_new(out), "program")
        self._handle = ffi.gc(out[0], lib.tl_program_free)
        self._what: list[str] = []
        self._failed = ffi.new("int64_t *")

    def __len__(self) -> int:
        return int(lib.tl_program_len(self._handle))

    def append(self, record: Any, what: str, args: tuple[Any, ...]) -> None:
        """Record one call: `record` is the tl_prog_ function of the kernel."""
        check(record(self._handle, *args), f"recording {what}")
        self._what.append(what)

    def run(self) -> None:
        """Make every call in order; the first that fails raises KernelError naming it."""
        status = lib.tl_program_run(self._handle, self._failed)
        if status:
            check(status, self._what[self._failed[0]])
