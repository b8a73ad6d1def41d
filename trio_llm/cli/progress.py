"""Progress for pull, push and create: tqdm bars on a terminal, plain lines everywhere else.

The server streams Ollama's progress items: `{"status": ...}` for a step, and items that also
carry `total`/`completed` (and usually a `digest`) while bytes move. On a terminal each digest
gets a bar with bytes, percentage, speed and time left, as `ollama pull` draws them; when
stdout is a pipe or a file, each step is one line and byte transfers print every tenth.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from tqdm import tqdm

BAR_FORMAT = "{desc}: {percentage:3.0f}% ▕{bar:25}▏ {n_fmt}B/{total_fmt}B {rate_fmt} {remaining}"


def label(item: Mapping[str, Any]) -> str:
    """`pulling 1a2b3c4d5e6f` for a digest's transfer, the bare status otherwise."""
    status = str(item.get("status", ""))
    digest = str(item.get("digest") or "")
    if not digest.startswith("sha256"):   # quantizing reports carry a placeholder digest
        return status
    short = digest.removeprefix("sha256:").removeprefix("sha256-")[:12]
    if digest in status:
        return status.replace(digest, short)
    return status if short in status else f"{status} {short}"


class ProgressView:
    """Shows one stream of progress items; `close()` finishes any open bar."""

    def __init__(self, out: TextIO | None = None, tty: bool | None = None) -> None:
        self.out = out or sys.stdout
        self.tty = self.out.isatty() if tty is None else tty
        self.bars: dict[str, tqdm] = {}
        self.last_line = ""
        self.last_tenth: dict[str, int] = {}

    def show(self, item: Mapping[str, Any]) -> None:
        total, completed = item.get("total"), item.get("completed")
        if isinstance(total, int) and total > 0 and isinstance(completed, int):
            self._transfer(label(item), total, completed)
        elif item.get("status"):
            self._line(label(item))

    def _transfer(self, name: str, total: int, completed: int) -> None:
        if not self.tty:
            tenth = min(10, 10 * completed // total)
            if self.last_tenth.get(name) != tenth:
                self.last_tenth[name] = tenth
                self._line(f"{name} {tenth * 10}%", force=True)
            return
        bar = self.bars.get(name)
        if bar is None:
            bar = self.bars[name] = tqdm(total=total, desc=name, file=self.out, unit="B",
                                         unit_scale=True, unit_divisor=1000, leave=True,
                                         bar_format=BAR_FORMAT, dynamic_ncols=True)
        bar.total = max(bar.total or 0, total)
        bar.update(max(0, completed - bar.n))

    def _line(self, text: str, force: bool = False) -> None:
        if text == self.last_line and not force:
            return
        self.last_line = text
        if self.tty:
            self._close_bars()
        print(text, file=self.out, flush=True)

    def _close_bars(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()

    def close(self) -> None:
        self._close_bars()


def show_progress(items: Iterable[Mapping[str, Any]], out: TextIO | None = None,
                  tty: bool | None = None) -> None:
    """Show every item of a progress stream until it ends (errors propagate)."""
    view = ProgressView(out, tty)
    try:
        for item in items:
            view.show(item)
    finally:
        view.close()
