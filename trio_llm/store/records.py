"""What the store hands out: a model's record, its `list` entry and its `show` answer.

Each has `to_json()` giving exactly the object Ollama's API returns, so the HTTP layer only
serialises. Timestamps are RFC 3339 with Go's trimmed nanosecond fraction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from trio_llm.store.manifests import Manifest
from trio_llm.store.names import ModelName


def rfc3339(moment: datetime) -> str:
    """`2024-06-04T14:38:31.83753-07:00` as Go's RFC3339Nano writes it (`Z` for UTC)."""
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    offset = moment.utcoffset()
    if offset is None or offset == timedelta(0):
        return text + "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    hours, mins = divmod(abs(minutes), 60)
    return f"{text}{sign}{hours:02d}:{mins:02d}"


@dataclass(frozen=True)
class ModelDetails:
    """The `details` object of list, show and ps."""

    format: str = "gguf"
    family: str = ""
    families: list[str] | None = None
    parameter_size: str = ""
    quantization_level: str = ""
    parent_model: str = ""

    @classmethod
    def from_config(cls, config: dict[str, Any], parent_model: str = "") -> ModelDetails:
        families = config.get("model_families")
        return cls(format=str(config.get("model_format") or "gguf"),
                   family=str(config.get("model_family") or ""),
                   families=list(families) if isinstance(families, list) else None,
                   parameter_size=str(config.get("model_type") or ""),
                   quantization_level=str(config.get("file_type") or ""),
                   parent_model=parent_model)

    def to_json(self) -> dict[str, Any]:
        return {"parent_model": self.parent_model, "format": self.format, "family": self.family,
                "families": self.families, "parameter_size": self.parameter_size,
                "quantization_level": self.quantization_level}


@dataclass
class ModelRecord:
    """Everything the server needs to run a stored model, read from its manifest's layers."""

    name: ModelName
    digest: str                        # sha256 hex of the manifest file
    manifest: Manifest
    modified_at: datetime
    config: dict[str, Any]
    details: ModelDetails
    model_digest: str
    model_path: Path
    adapter_paths: list[Path] = field(default_factory=list)
    projector_paths: list[Path] = field(default_factory=list)
    template: str | None = None        # None: no template layer (Ollama then uses {{ .Prompt }})
    system: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    licenses: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.manifest.size


@dataclass
class ListEntry:
    """One model of /api/tags."""

    name: ModelName
    modified_at: datetime
    size: int
    digest: str
    details: ModelDetails
    capabilities: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name.display, "model": self.name.display,
                "modified_at": rfc3339(self.modified_at), "size": self.size,
                "digest": self.digest, "details": self.details.to_json(),
                "capabilities": self.capabilities}


@dataclass
class ShowInfo:
    """The /api/show answer."""

    license: str
    modelfile: str
    parameters: str
    template: str
    system: str
    details: ModelDetails
    messages: list[dict[str, Any]]
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: datetime
    tensors: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)   # renderer, parser, requires

    def to_json(self) -> dict[str, Any]:
        # Go's omitempty: empty strings and lists are left out
        texts = {"license": self.license, "modelfile": self.modelfile,
                 "parameters": self.parameters, "template": self.template,
                 "system": self.system}
        out: dict[str, Any] = {k: v for k, v in texts.items() if v}
        out["details"] = self.details.to_json()
        if self.messages:
            out["messages"] = self.messages
        out["model_info"] = self.model_info
        if self.tensors:
            out["tensors"] = self.tensors
        out["capabilities"] = self.capabilities
        out["modified_at"] = rfc3339(self.modified_at)
        out.update({k: v for k, v in self.extra.items() if v})
        return out
