"""What `/api/ps` returns per loaded model (the CLI's column text is cli/format.py's)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

# Go's "forever": the largest time.Duration, about 292 years.
FOREVER_SECONDS = (2**63 - 1) / 1e9


@dataclass(frozen=True)
class ModelStatus:
    """One loaded model as the scheduler reports it (the API turns it into a /api/ps row)."""

    name: str
    model: str
    digest: str
    size: int
    size_vram: int
    details: Mapping[str, Any]
    expires_at: datetime
    context_length: int

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "size": self.size,
                "digest": self.digest, "details": dict(self.details),
                "expires_at": rfc3339(self.expires_at), "size_vram": self.size_vram,
                "context_length": self.context_length}


def wall_time(unix_seconds: float) -> datetime:
    """A local, timezone-aware datetime; inf and anything past Go's limit become 'forever'."""
    now = datetime.now().astimezone()
    ahead = unix_seconds - now.timestamp()
    if math.isinf(ahead) or ahead > FOREVER_SECONDS:
        ahead = FOREVER_SECONDS
    return now + timedelta(seconds=ahead)


def rfc3339(moment: datetime) -> str:
    """RFC 3339 with the local offset, as Go writes time.Time in JSON."""
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.isoformat()
