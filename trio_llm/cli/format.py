"""The text `trio-llm list` and `trio-llm ps` print: sizes, durations, PROCESSOR, UNTIL.

Worded as Ollama's CLI words them; read from the /api/tags and /api/ps JSON, so nothing here
knows the scheduler (the CLI talks HTTP only).
"""

from __future__ import annotations

import math
from datetime import datetime


def parse_rfc3339(text: str) -> datetime:
    """Read an RFC 3339 time, including Go's nanosecond fractions and a trailing Z."""
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    if "." in text:
        head, _, rest = text.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = head + "." + rest[:min(digits, 6)].ljust(6, "0") + rest[digits:]
    return datetime.fromisoformat(text)


def processor_text(size: int, size_vram: int) -> str:
    """`100% CPU`, `100% GPU`, `48%/52% CPU/GPU`, or `Unknown` for inconsistent sizes."""
    if size_vram == 0:
        return "100% CPU"
    if size_vram == size:
        return "100% GPU"
    if size_vram > size or size <= 0:
        return "Unknown"
    cpu = _round_half_away((size - size_vram) / size * 100)
    return f"{cpu}%/{100 - cpu}% CPU/GPU"


def _round_half_away(x: float) -> int:
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def human_duration(seconds: float) -> str:
    """`Less than a second`, `1 second`, `N seconds`, `About a minute`, `N minutes`, ...."""
    if seconds < 1:
        return "Less than a second"
    if int(seconds) == 1:
        return "1 second"
    if seconds < 60:
        return f"{int(seconds)} seconds"
    minutes = int(seconds // 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = _round_half_away(seconds / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // (24 * 7)} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // (24 * 30)} months"
    return f"{hours // (24 * 365)} years"


def ago(moment: datetime) -> str:
    """The MODIFIED column: `3 minutes ago`, `About an hour ago`."""
    seconds = (datetime.now().astimezone() - moment).total_seconds()
    return f"{human_duration(max(seconds, 0.0))} ago"


def until_text(expires_at: datetime, now: datetime | None = None) -> str:
    """The UNTIL column: `Stopping...` once past, `Forever` past 20 years, else `N ... from now`."""
    now = now or datetime.now().astimezone()
    ahead = (expires_at - now).total_seconds()
    if ahead < 0:
        return "Stopping..."
    if int(ahead / 3600) // 24 // 365 > 20:
        return "Forever"
    return f"{human_duration(ahead)} from now"


def human_bytes(n: int) -> str:
    """Decimal units as the SIZE column: `98 MB`, `9.6 GB`, `42 GB`, `512 B`."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            value = n / scale
            if value >= 10 or value == int(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{n} B"
