"""Checks at the HTTP edge that the route schemas share: how deep a JSON body may nest, and
what an `images` entry must be (a non-empty PNG, JPEG, WebP or GIF, recognised by its first
bytes), so malformed input is a 400 before anything is rendered or loaded."""

from __future__ import annotations

from typing import Any

from trio_llm.errors import BadRequest

MAX_JSON_DEPTH = 256       # nesting of arrays and objects in a request body
IMAGE_SIGNATURES: tuple[tuple[str, bytes], ...] = (
    ("png", b"\x89PNG\r\n\x1a\n"), ("jpeg", b"\xff\xd8\xff"), ("gif", b"GIF8"),
)


def check_depth(body: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """BadRequest if arrays/objects nest deeper than `limit` (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            raise BadRequest(f"request body nests arrays and objects deeper than {limit} levels")
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, dict | list))


def image_kind(data: bytes) -> str | None:
    """"png", "jpeg", "gif" or "webp" from the leading bytes; None for anything else."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((kind for kind, magic in IMAGE_SIGNATURES if data.startswith(magic)), None)


def check_image(data: bytes, index: int) -> None:
    if not data:
        raise BadRequest(f"image {index} is empty")
    if image_kind(data) is None:
        raise BadRequest(f"image {index} is not a PNG, JPEG, WebP or GIF image")
