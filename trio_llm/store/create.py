"""Create a model: a GGUF blob (or an existing model) plus template, system, params, messages,
license layers, written as blobs and a manifest the way `ollama create` does.

Two front doors lead to one `create`: the JSON form of /api/create (`CreateRequest.from_json`)
and a Modelfile (`request_from_modelfile`, which first copies any FROM/ADAPTER files into
blobs). `quantize` (q8_0, q4_0, q4_K_M, q4_K_S) rewrites the model GGUF with our quantizer
(trio_llm.store.quantize) into a new blob that replaces the model layer.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from trio_llm.formats import modelfile
from trio_llm.formats import params as params_mod
from trio_llm.formats.gguf_file import GGUFError, read_gguf
from trio_llm.prompt import library
from trio_llm.prompt.template import validate as validate_template
from trio_llm.store.atomic import TempFile
from trio_llm.store.blobs import CHUNK, stream_into
from trio_llm.store.errors import (
    InvalidDigest,
    InvalidModelfile,
    InvalidParameter,
    InvalidRequest,
    ModelNotFound,
    StoreError,
)
from trio_llm.store.gguf_info import summarize
from trio_llm.store.manifests import (
    ADAPTER,
    CONFIG,
    LICENSE,
    MESSAGES,
    MODEL,
    PARAMS,
    PROJECTOR,
    SYSTEM,
    TEMPLATE,
    Layer,
    Manifest,
    config_blob,
    go_json,
)
from trio_llm.store.names import ModelName, parse_digest, parse_name
from trio_llm.store.progress import ProgressStream, Throttle, status

if TYPE_CHECKING:
    from trio_llm.store.store import PinSet, Store

_EXTRA_KEYS = ("renderer", "parser", "requires")
QUANTIZE_DIGEST = "0000000000000000000"   # what Ollama sends as the digest of quantize progress


def quantize(model_path: Path, target: str) -> Path:
    """Quantize a GGUF to `target` (q8_0, q4_0, q4_K_M, q4_K_S; any case) with our kernels and
    return the new file: a GGUF beside `model_path` under a temporary name (`.quantize-*`),
    already re-read and verified, which the caller moves into place or removes.

    QuantizationNotSupported (HTTP 400) for an unknown target or a source that is not
    F32/F16/BF16; nothing is left behind then.
    """
    from trio_llm.store.quantize import quantize_gguf
    fd, name = tempfile.mkstemp(prefix=".quantize-", suffix=".gguf", dir=model_path.parent)
    os.close(fd)
    try:
        for _ in quantize_gguf(model_path, Path(name), target):
            pass
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


@dataclass
class CreateRequest:
    """The JSON form of /api/create, validated."""

    model: str
    from_: str | None = None
    files: dict[str, str] = field(default_factory=dict)      # file name -> blob digest
    adapters: dict[str, str] = field(default_factory=dict)
    template: str | None = None
    system: str | None = None
    parameters: dict[str, Any] | None = None
    messages: list[dict[str, Any]] | None = None
    license: list[str] | None = None
    quantize: str | None = None
    renderer: str | None = None
    parser: str | None = None
    requires: str | None = None

    @classmethod
    def from_json(cls, body: Any) -> CreateRequest:
        """Validate a request body; InvalidRequest (400) for anything of the wrong shape."""
        if not isinstance(body, dict):
            raise InvalidRequest("missing request body")
        model = body.get("model") or body.get("name")
        if not isinstance(model, str) or not model.strip():
            raise InvalidRequest("model is required")
        lic = body.get("license")
        return cls(model=model, from_=_opt_str(body, "from"),
                   files=_digest_map(body, "files"), adapters=_digest_map(body, "adapters"),
                   template=_opt_str(body, "template"), system=_opt_str(body, "system"),
                   parameters=params_mod.check(body["parameters"])
                   if body.get("parameters") is not None else None,
                   messages=_messages(body.get("messages")),
                   license=[lic] if isinstance(lic, str) else _str_list(lic, "license"),
                   quantize=_opt_str(body, "quantize") or _opt_str(body, "quantization"),
                   renderer=_opt_str(body, "renderer"), parser=_opt_str(body, "parser"),
                   requires=_opt_str(body, "requires"))


def _opt_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidRequest(f"{key} must be a string")
    return value


def _str_list(value: Any, key: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(f"{key} must be a string or a list of strings")
    return list(value)


def _digest_map(body: dict[str, Any], key: str) -> dict[str, str]:
    value = body.get(key) or {}
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidRequest(f"{key} must map file names to digests")
    return dict(value)


def _messages(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidRequest("messages must be a list")
    out = []
    for message in value:
        if not isinstance(message, dict) or not isinstance(message.get("content", ""), str):
            raise InvalidRequest("each message needs a role and a content string")
        role = str(message.get("role", "")).lower()
        if role not in modelfile.ROLES:
            raise InvalidRequest('role must be one of "system", "user", or "assistant"')
        out.append({"role": role, "content": message.get("content", "")})
    return out


@dataclass
class _Base:
    """What a new model starts from: weight layers, plus texts inherited from a base model."""

    layers: list[Layer]
    template: str | None = None
    system: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    licenses: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    from_gguf: bool = False          # built from GGUF files: a template may be autodetected


def create(store: Store, req: CreateRequest, pins: PinSet | None = None
           ) -> ProgressStream[ModelName]:
    """Build and write the model `req.model`; yields Ollama's create statuses."""
    name = parse_name(req.model)
    if req.template:
        validate_template(req.template)     # a 400 naming the line and column, before any work
    with contextlib.ExitStack() as stack:
        if pins is None:
            pins = stack.enter_context(store.pins())
        if req.quantize:
            from trio_llm.store.quantize import parse_target
            parse_target(req.quantize)     # refuse an unknown target before any work
        base = yield from _base(store, req, pins)
        models = [layer for layer in base.layers if layer.media_type == MODEL]
        if len(models) != 1:
            raise InvalidRequest(f"a model needs exactly one GGUF model file, got {len(models)}")
        layers = list(base.layers)
        new_digests: set[str] = set()
        if req.quantize:
            quantized, existed = yield from _quantize_layer(store, models[0], req.quantize, pins)
            layers = [quantized if layer is models[0] else layer for layer in layers]
            models = [quantized]
            if not existed:
                new_digests.add(quantized.digest)
        if req.adapters:
            if len(req.adapters) > 1:
                raise InvalidRequest("only one adapter is currently supported")
            layers = [layer for layer in layers if layer.media_type != ADAPTER]
            for filename, digest in req.adapters.items():
                _check_filename(filename)
                layer = yield from _gguf_layer(store, digest, pins)
                layers.append(Layer(ADAPTER, layer.digest, layer.size))
        summary = store.summary(models[0].digest)

        template, auto_params = base.template, {}
        if req.template is not None:
            template = req.template
        elif template is None and base.from_gguf:
            detected = library.detect(summary.chat_template)
            if detected is not None:
                yield status(f"using autodetected template {detected[0]}")
                template, auto_params = detected[1], detected[2]
        params = params_mod.merge(auto_params, params_mod.merge(base.params, req.parameters or {}))
        system = req.system if req.system is not None else base.system
        messages = req.messages if req.messages is not None else base.messages
        licenses = req.license if req.license is not None else base.licenses

        for layer in layers:
            verb = "creating new layer" if layer.digest in new_digests else "using existing layer"
            yield status(f"{verb} {layer.digest}")
        texts: list[tuple[str, bytes]] = []
        if template:
            texts.append((TEMPLATE, template.encode()))
        if system:
            texts.append((SYSTEM, system.encode()))
        texts += [(LICENSE, text.encode()) for text in licenses]
        if params:
            texts.append((PARAMS, go_json(dict(sorted(params.items())))))
        if messages:
            texts.append((MESSAGES, go_json(messages)))
        for media_type, data in texts:
            layer, existed = _small_blob(store, pins, media_type, data)
            verb = "using existing layer" if existed else "creating new layer"
            yield status(f"{verb} {layer.digest}")
            layers.append(layer)

        extra = {k: v for k, v in base.extra.items() if v}
        extra.update({k: getattr(req, k) for k in _EXTRA_KEYS if getattr(req, k)})
        families = [summary.architecture]
        if any(layer.media_type == PROJECTOR for layer in layers):
            families.append("clip")
        config_bytes = config_blob(family=summary.architecture, families=families,
                                   model_type=summary.parameter_size,
                                   file_type=summary.quantization_level, layers=layers,
                                   extra=extra)
        config, _ = _small_blob(store, pins, CONFIG, config_bytes)
        yield status("writing manifest")
        store.write_manifest(name, Manifest(config, tuple(layers)))
        yield status("success")
    return store.resolve(req.model)


def _base(store: Store, req: CreateRequest, pins: PinSet) -> Generator[Any, None, _Base]:
    if req.files:
        layers = []
        for filename, digest in req.files.items():
            _check_filename(filename)
            layers.append((yield from _gguf_layer(store, digest, pins, runnable=True)))
        return _Base(layers, from_gguf=True)
    if not req.from_:
        raise InvalidRequest("neither 'from' or 'files' was specified")
    if _is_digest(req.from_):
        layer = yield from _gguf_layer(store, req.from_, pins, runnable=True)
        return _Base([layer], from_gguf=True)
    base_name = parse_name(req.from_)
    if not store.exists(req.from_):
        from trio_llm.store.catalog import lookup
        if lookup(base_name) is None:
            raise ModelNotFound(req.from_)
        yield from store.pull(req.from_)
    record = store.get(req.from_)
    pins.add(*record.manifest.digests)
    parent = record.name.display
    layers = [Layer(x.media_type, x.digest, x.size, x.source or parent)
              for x in record.manifest.layers if x.media_type in (MODEL, PROJECTOR, ADAPTER)]
    return _Base(layers, template=record.template, system=record.system,
                 params=record.params, messages=record.messages, licenses=record.licenses,
                 extra={k: record.config.get(k) for k in _EXTRA_KEYS})


def _quantize_layer(store: Store, layer: Layer, target: str, pins: PinSet
                    ) -> Generator[Any, None, tuple[Layer, bool]]:
    """Quantize a model layer's GGUF into a new blob, reporting progress as Ollama does; returns
    the new layer and whether its blob was already stored."""
    from trio_llm.store.quantize import parse_target, quantize_gguf
    wanted = parse_target(target)
    throttle = Throttle()
    with TempFile(store.blobs.directory) as tmp:   # locked: a concurrent cleanup spares it
        try:
            for kind, done, total in quantize_gguf(store.blob_path(layer.digest), tmp.path,
                                                   wanted):
                if throttle.ready() or done == total:
                    yield {"status": f"quantizing {kind} model to {wanted.name}",
                           "digest": QUANTIZE_DIGEST, "total": layer.size,
                           "completed": done * layer.size // total if total else layer.size}
                if done == total:
                    yield status("verifying conversion")
        except GGUFError as exc:
            raise StoreError(f"quantized model failed verification: {exc}") from None
        digest = _file_digest(tmp.path)
        pins.add(digest)
        dest = store.blob_path(digest)
        existed = dest.is_file() and dest.stat().st_size == tmp.path.stat().st_size
        if not existed:
            tmp.commit(dest)
    return Layer(MODEL, digest, dest.stat().st_size, layer.source), existed


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _gguf_layer(store: Store, digest: str, pins: PinSet, runnable: bool = False
                ) -> Generator[Any, None, Layer]:
    """The layer of a stored GGUF blob: a projector (clip) or a model; with `runnable`, a model
    must pass every check loading it would make (ModelFileError, a 400, names the problem)."""
    digest = parse_digest(digest)
    pins.add(digest)
    size = store.blobs.size(digest)
    yield status("parsing GGUF")
    summary = store.summary(digest)
    if summary.architecture == "clip":
        return Layer(PROJECTOR, digest, size)
    if runnable:
        from trio_llm.engine.model import check_model_file  # the kernels load only here
        with read_gguf(store.blob_path(digest)) as gguf:
            check_model_file(gguf)
    return Layer(MODEL, digest, size)


def _small_blob(store: Store, pins: PinSet, media_type: str, data: bytes) -> tuple[Layer, bool]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    pins.add(digest)
    existed = store.has_blob(digest)
    if not existed:
        store.blobs.write_bytes(data, expected=digest)
    return Layer(media_type, digest, len(data)), existed


def _is_digest(value: str) -> bool:
    try:
        parse_digest(value)
    except InvalidDigest:
        return False
    return True


def _check_filename(filename: str) -> None:
    path = PurePosixPath(filename.replace("\\", "/"))
    if not filename or "\0" in filename or path.is_absolute() or ".." in path.parts \
            or (len(filename) > 1 and filename[1] == ":"):
        raise InvalidRequest("file path must be relative")


def request_from_modelfile(store: Store, name: str, text: str, base_dir: Path | None,
                           allow_paths: bool, pins: PinSet) -> ProgressStream[CreateRequest]:
    """Turn Modelfile text into a CreateRequest, copying FROM/ADAPTER files into blobs."""
    parsed = modelfile.parse(text)
    parse_name(name)
    req = CreateRequest(model=name)
    stops: list[tuple[str, str]] = []
    for cmd in parsed.commands:
        if cmd.name in ("from", "adapter"):
            path = _local_path(cmd, base_dir, allow_paths)
            if path is None and cmd.name == "from" and not _is_digest(cmd.value):
                req.from_, req.files = cmd.value, {}
                continue
            digest = (yield from _import_file(store, path, pins)) if path is not None \
                else parse_digest(cmd.value)
            key = path.name if path is not None else digest
            if cmd.name == "from":
                req.from_ = None
                req.files[key] = digest
            else:
                req.adapters[key] = digest
        elif cmd.name in ("template", "system", "renderer", "parser", "requires"):
            setattr(req, cmd.name, cmd.value)
        elif cmd.name == "license":
            req.license = [*(req.license or []), cmd.value]
        elif cmd.name == "message":
            req.messages = [*(req.messages or []), {"role": cmd.key, "content": cmd.value}]
        elif cmd.name == "parameter":
            try:
                params_mod.from_modelfile([(cmd.key.lower(), cmd.value)])
            except InvalidParameter as exc:
                raise InvalidModelfile(exc.message, cmd.line) from None
            stops.append((cmd.key.lower(), cmd.value))
        elif cmd.name == "draft":
            raise InvalidModelfile("DRAFT models are not supported", cmd.line)
    if stops:
        req.parameters = params_mod.from_modelfile(stops)
    return req


def _local_path(cmd: modelfile.Command, base_dir: Path | None, allow_paths: bool
                ) -> Path | None:
    """The file a FROM/ADAPTER value names, None if it names a model or a digest."""
    value = cmd.value
    if _is_digest(value):
        return None
    path_like = value.startswith(("/", "./", "../", "~", ".\\")) or value.lower().endswith(
        (".gguf", ".bin", ".safetensors"))
    if not allow_paths:
        if path_like:
            raise InvalidModelfile("file paths are not allowed here; upload the file as a blob",
                                   cmd.line)
        return None
    path = Path(os.path.expanduser(value))
    if not path.is_absolute():
        path = (base_dir or Path.cwd()) / path
    if path.is_dir():
        raise InvalidModelfile("only GGUF files are supported (not safetensors folders)",
                               cmd.line)
    if path.is_file():
        return path
    if path_like or cmd.name == "adapter":
        raise InvalidModelfile(f"no such file: {value}", cmd.line)
    return None


def _import_file(store: Store, path: Path, pins: PinSet) -> ProgressStream[str]:
    """Copy a local GGUF into a blob (hashing as it goes); returns its digest."""
    summarize(path)   # NotGGUF before copying anything
    total = path.stat().st_size
    throttle = Throttle()
    with store.blob_writer() as writer, open(path, "rb") as source:
        for done in stream_into(writer, source):
            if throttle.ready():
                yield {"status": "copying file", "total": total, "completed": done}
        yield {"status": "copying file", "total": total, "completed": writer.size}
        pins.add(writer.digest_so_far)
        return writer.commit()
