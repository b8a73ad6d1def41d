"""`trio-llm create NAME -f Modelfile`: the Modelfile is read here, local files go up as blobs,
and the server builds the model from the JSON form of /api/create, as `ollama create` does."""

from __future__ import annotations

import argparse
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from tqdm import tqdm

from trio_llm.cli.client import CLIError, call, stream, upload
from trio_llm.cli.progress import BAR_FORMAT, show_progress
from trio_llm.errors import InvalidModelfile, InvalidParameter
from trio_llm.formats import modelfile
from trio_llm.formats import params as params_mod

MODEL_SUFFIXES = (".gguf", ".bin")


@dataclass
class Upload:
    """A local file the Modelfile names: its path and sha256 digest."""

    path: Path
    digest: str


def create(args: argparse.Namespace) -> int:
    """Read the Modelfile, upload what the server lacks, then stream the server's statuses."""
    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CLIError(f"Error: cannot read {path}: {exc.strerror}") from None
    try:
        body, uploads = request_body(args.model, text, path.parent)
    except (InvalidModelfile, InvalidParameter) as exc:
        raise CLIError(f"Error: {exc}") from None
    if args.quantize:
        body["quantize"] = args.quantize
    print("gathering model components", flush=True)
    for item in uploads:
        send_blob(item)
    show_progress(stream("/api/create", body))
    return 0


def request_body(name: str, text: str, base_dir: Path) -> tuple[dict[str, Any], list[Upload]]:
    """The /api/create body for Modelfile `text`, and the local files it needs uploaded."""
    parsed = modelfile.parse(text)
    body: dict[str, Any] = {"model": name}
    uploads: list[Upload] = []
    parameters: list[tuple[str, str]] = []
    for cmd in parsed.commands:
        if cmd.name in ("from", "adapter"):
            local = local_file(cmd.value, base_dir)
            if local is None:
                if cmd.name == "adapter":
                    raise InvalidModelfile(f"no such file: {cmd.value}", cmd.line)
                body["from"] = cmd.value
                continue
            upload_item = Upload(local, file_digest(local))
            uploads.append(upload_item)
            key = "files" if cmd.name == "from" else "adapters"
            body.setdefault(key, {})[local.name] = upload_item.digest
        elif cmd.name in ("template", "system", "renderer", "parser", "requires"):
            body[cmd.name] = cmd.value
        elif cmd.name == "license":
            body.setdefault("license", []).append(cmd.value)
        elif cmd.name == "message":
            body.setdefault("messages", []).append({"role": cmd.key, "content": cmd.value})
        elif cmd.name == "parameter":
            parameters.append((cmd.key.lower(), cmd.value))
        elif cmd.name == "draft":
            raise InvalidModelfile("DRAFT models are not supported", cmd.line)
    if parameters:
        body["parameters"] = params_mod.from_modelfile(parameters)
    if "from" in body and "files" in body:
        del body["from"]
    return body, uploads


def local_file(value: str, base_dir: Path) -> Path | None:
    """The file a FROM/ADAPTER value names, or None when it names a model."""
    path = Path(os.path.expanduser(value))
    if not path.is_absolute():
        path = base_dir / path
    if path.is_file():
        return path
    if path.is_dir():
        raise CLIError(f"Error: {value} is a folder; only GGUF files can be imported")
    if value.startswith(("/", "./", "../", "~")) or value.lower().endswith(MODEL_SUFFIXES):
        raise CLIError(f"Error: no such file: {value}")
    return None


def file_digest(path: Path) -> str:
    """sha256 of a file, read in large chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


class _Counting:
    """A file wrapper that moves a progress bar as the request body is read."""

    def __init__(self, f: BinaryIO, bar: tqdm) -> None:
        self.f, self.bar = f, bar

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.bar.update(len(data))
        return data


def send_blob(item: Upload) -> None:
    """Upload one file unless the server has its blob already (HEAD /api/blobs/DIGEST)."""
    path = f"/api/blobs/{item.digest}"
    if call("HEAD", path, missing_ok=True) is not False:
        print(f"using existing layer {item.digest}", flush=True)
        return
    size = item.path.stat().st_size
    desc = f"copying file {item.digest.removeprefix('sha256:')[:12]}"
    with open(item.path, "rb") as f, tqdm(total=size, desc=desc, unit="B", unit_scale=True,
                                          unit_divisor=1000, bar_format=BAR_FORMAT,
                                          disable=None) as bar:
        upload(path, _Counting(f, bar), size)
    print(f"copied {item.path.name} ({item.digest})", flush=True)


def add_create(verbs: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register `create` on the `trio-llm` parser."""
    p = verbs.add_parser("create", help="create a model from a Modelfile")
    p.add_argument("model")
    p.add_argument("-f", "--file", default="Modelfile",
                   help="name of the Modelfile (default: Modelfile)")
    p.add_argument("-q", "--quantize", help="quantize the model to this level (e.g. q4_K_M)")
    p.set_defaults(run=create)
