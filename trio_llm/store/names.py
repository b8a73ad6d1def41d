"""Model names and blob digests: parsed, validated and normalised before they reach a path.

A name is `[scheme://][host/][namespace/]model[:tag]`. Every part is checked against a strict
character set (`[A-Za-z0-9_][A-Za-z0-9_.-]*`, `:` only in the host, no `.` in the namespace), so
a validated part can never be `.`, `..`, empty, absolute or contain a separator: nothing that
could leave the store. Validation is pure string work; nothing here touches the file system.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from trio_llm.store.errors import InvalidDigest, InvalidName

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

MAX_PART = 80
MAX_HOST = 255       # Ollama allows 350, but the host is a directory name: 255 bytes at most
MAX_NAME = MAX_HOST + 3 * MAX_PART + 16   # an upper bound on any valid spelling, scheme included

_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
_NAMESPACE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*\Z")
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*\Z")
_DIGEST = re.compile(r"sha256[:-]([0-9a-fA-F]{64})\Z")


@dataclass(frozen=True)
class ModelName:
    """A fully qualified, validated model name. Compare with `.key` (case-insensitive)."""

    host: str
    namespace: str
    model: str
    tag: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        """The identity used for lookups: Ollama compares names case-insensitively."""
        return (self.host.lower(), self.namespace.lower(), self.model.lower(), self.tag.lower())

    @property
    def parts(self) -> tuple[str, str, str, str]:
        """The four path components under `manifests/`, in order."""
        return (self.host, self.namespace, self.model, self.tag)

    @property
    def display(self) -> str:
        """The shortest spelling that means this name (`smollm2:135m`, `ns/m:v1`, `h/ns/m:v1`)."""
        if self.host.lower() != DEFAULT_HOST:
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace.lower() != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"

    @property
    def full(self) -> str:
        """Every part spelled out: `registry.ollama.ai/library/smollm2:135m`."""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    def __str__(self) -> str:
        return self.display


def parse_name(name: str) -> ModelName:
    """Parse and validate a model name, filling in Ollama's defaults. Raises InvalidName."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise InvalidName(str(name)[:MAX_NAME])
    rest = name
    for scheme in ("https://", "http://"):
        if rest.startswith(scheme):
            rest = rest[len(scheme):]
            break
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    tag = DEFAULT_TAG
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
    pieces = rest.split("/")
    if len(pieces) > 3:
        raise InvalidName(name)
    model = pieces[-1]
    namespace = pieces[-2] if len(pieces) >= 2 else DEFAULT_NAMESPACE
    host = pieces[-3] if len(pieces) == 3 else DEFAULT_HOST
    if not (_valid(_HOST, host, MAX_HOST) and _valid(_NAMESPACE, namespace, MAX_PART)
            and _valid(_PART, model, MAX_PART) and _valid(_PART, tag, MAX_PART)):
        raise InvalidName(name)
    return ModelName(host, namespace, model, tag)


def name_from_parts(parts: tuple[str, ...] | list[str]) -> ModelName | None:
    """The name stored under `manifests/<host>/<ns>/<model>/<tag>`, or None if not a valid one."""
    if len(parts) != 4:
        return None
    host, namespace, model, tag = parts
    if (_valid(_HOST, host, MAX_HOST) and _valid(_NAMESPACE, namespace, MAX_PART)
            and _valid(_PART, model, MAX_PART) and _valid(_PART, tag, MAX_PART)):
        return ModelName(host, namespace, model, tag)
    return None


def _valid(pattern: re.Pattern[str], part: str, limit: int) -> bool:
    return 0 < len(part) <= limit and pattern.match(part) is not None and part.isascii()


def parse_digest(digest: str) -> str:
    """Normalise `sha256:HEX` / `sha256-HEX` to `sha256:<lowercase hex>`. Raises InvalidDigest."""
    match = _DIGEST.match(digest) if isinstance(digest, str) else None
    if match is None:
        raise InvalidDigest(str(digest)[:100])
    return "sha256:" + match.group(1).lower()


def digest_hex(digest: str) -> str:
    """The 64 hex characters of a digest."""
    return parse_digest(digest)[len("sha256:"):]


def blob_filename(digest: str) -> str:
    """The file name a blob is stored under: `sha256-<hex>` (`:` is not portable in file names)."""
    return "sha256-" + digest_hex(digest)
