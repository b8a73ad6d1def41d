"""Ollama's REST API (/api/*): the routes, their NDJSON streams and response shapes.

Every handler reads and checks its request first (schemas), asks the backend, and shapes the
answer like Ollama does. Errors are raised as trio_llm.errors types and answered by errors.py.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import aclosing
from typing import Any

from quart import Blueprint, Response, request

from trio_llm import __version__
from trio_llm.api import generation
from trio_llm.api.backend import Backend, GenerationChunk
from trio_llm.api.errors import ndjson_error
from trio_llm.api.metrics import Metrics
from trio_llm.api.schemas import (
    ChatRequest,
    EmbeddingsRequest,
    EmbedRequest,
    Fields,
    GenerateRequest,
    check_finite,
    final_stats,
    l2_normalise,
    now_rfc3339,
    read_json,
    rfc3339,
    token_logprobs,
)
from trio_llm.api.streaming import (
    NDJSON,
    Primed,
    empty_response,
    json_response,
    ndjson_line,
    prime,
    stream_response,
    streamed,
    vectors_response,
)
from trio_llm.errors import BadRequest, InvalidDigest, ModelNotFound

DIGEST = re.compile(r"sha256:[0-9a-fA-F]{64}")
# The Ollama release whose API we answer like: clients that check the server's version
# (for tools, thinking...) compare against Ollama's numbering; ours is reported beside it.
OLLAMA_VERSION = "0.12.0"


def ndjson(items: Primed[Any], shape: Callable[[Any], Mapping[str, Any]]) -> Response:
    return stream_response(streamed(items, lambda item: ndjson_line(shape(item)), ndjson_error),
                           NDJSON)


def _required_model(fields: Fields) -> str:
    name = fields.model()
    if not name:
        raise BadRequest("model is required")
    return name


def blueprint(backend: Backend, metrics: Metrics) -> Blueprint:
    """The /api routes and `/`, bound to one backend."""
    bp = Blueprint("ollama", __name__)

    @bp.route("/", methods=["GET", "HEAD"])
    async def root() -> Response:
        return Response("trio-llm is running", content_type="text/plain; charset=utf-8")

    @bp.route("/api/version", methods=["GET", "HEAD"])
    async def version() -> Response:
        return json_response({"version": OLLAMA_VERSION, "trio_llm_version": __version__})

    @bp.post("/api/generate")
    async def generate() -> Response:
        began = time.monotonic_ns()
        req = GenerateRequest.parse(await read_json())
        generation.check_raw(req)
        if not req.model:
            raise ModelNotFound("")
        ref = await backend.resolve(req.model)
        if not req.prompt and not req.images:
            reason = await generation.preload(backend, ref, req.options, req.keep_alive)
            return json_response({"model": req.model, "created_at": now_rfc3339(),
                                  "response": "", "done": True, "done_reason": reason})
        prepared = await generation.generate_request(ref, req)
        chunks = await generation.start(backend, metrics, prepared)

        def shape(chunk: GenerationChunk) -> dict[str, Any]:
            out: dict[str, Any] = {"model": req.model, "created_at": now_rfc3339(),
                                   "response": chunk.text}
            if chunk.thinking:
                out["thinking"] = chunk.thinking
            if chunk.logprobs:
                out["logprobs"] = token_logprobs(chunk.logprobs)
            out["done"] = chunk.done
            if chunk.done:
                out["done_reason"] = generation.done_reason(chunk)
                if not req.raw and chunk.context is not None:
                    out["context"] = list(chunk.context)
                out.update(final_stats(chunk, time.monotonic_ns() - began))
                out.update(generation.truncation_fields(chunk))
            return out

        if req.stream:
            return generation.report_truncation(ndjson(chunks, shape), chunks)
        return generation.report_truncation(
            json_response(shape(await generation.collect(chunks))), chunks)

    @bp.post("/api/chat")
    async def chat() -> Response:
        began = time.monotonic_ns()
        req = ChatRequest.parse(await read_json())
        if not req.model:
            raise BadRequest("model is required")
        ref = await backend.resolve(req.model)
        if not req.messages:
            reason = await generation.preload(backend, ref, req.options, req.keep_alive)
            return json_response({"model": req.model, "created_at": now_rfc3339(),
                                  "message": {"role": "assistant", "content": ""},
                                  "done": True, "done_reason": reason})
        prepared = await generation.chat_request(ref, req)
        chunks = await generation.start(backend, metrics, prepared)

        def shape(chunk: GenerationChunk) -> dict[str, Any]:
            message: dict[str, Any] = {"role": "assistant", "content": chunk.text}
            if chunk.thinking:
                message["thinking"] = chunk.thinking
            if chunk.tool_calls:
                message["tool_calls"] = [dict(call) for call in chunk.tool_calls]
            out: dict[str, Any] = {"model": req.model, "created_at": now_rfc3339(),
                                   "message": message}
            if chunk.logprobs:
                out["logprobs"] = token_logprobs(chunk.logprobs)
            out["done"] = chunk.done
            if chunk.done:
                out["done_reason"] = generation.done_reason(chunk)
                out.update(final_stats(chunk, time.monotonic_ns() - began))
                out.update(generation.truncation_fields(chunk))
            return out

        if req.stream:
            return generation.report_truncation(ndjson(chunks, shape), chunks)
        return generation.report_truncation(
            json_response(shape(await generation.collect(chunks))), chunks)

    @bp.post("/api/embed")
    async def embed() -> Response:
        began = time.monotonic_ns()
        req = EmbedRequest.parse(await read_json())
        if not req.model:
            raise ModelNotFound("")
        ref = await backend.resolve(req.model)
        if not req.inputs:
            return json_response({"model": req.model, "embeddings": []})
        result = await backend.embed(ref, list(req.inputs), truncate=req.truncate,
                                     options=generation.merged_options(ref, req.options),
                                     keep_alive=req.keep_alive)
        check_finite(result.embeddings)
        vectors = [l2_normalise(v) for v in result.embeddings]
        if req.dimensions:
            vectors = [l2_normalise(v[:req.dimensions]) for v in vectors]
        out: dict[str, Any] = {"model": req.model, "embeddings": vectors,
                               "total_duration": time.monotonic_ns() - began,
                               "load_duration": result.load_duration,
                               "prompt_eval_count": result.prompt_eval_count,
                               "truncated_inputs": list(result.truncated_inputs)}
        return vectors_response({k: v for k, v in out.items() if k == "embeddings" or v})

    @bp.post("/api/embeddings")
    async def embeddings() -> Response:
        req = EmbeddingsRequest.parse(await read_json())
        if not req.model:
            raise BadRequest("model is required")
        ref = await backend.resolve(req.model)
        if not req.prompt:
            return json_response({"embedding": []})
        result = await backend.embed(ref, [req.prompt], truncate=True,
                                     options=generation.merged_options(ref, req.options),
                                     keep_alive=req.keep_alive)
        check_finite(result.embeddings)
        return json_response({"embedding": [float(x) for x in result.embeddings[0]]})

    @bp.route("/api/tags", methods=["GET", "HEAD"])
    async def tags() -> Response:
        models = sorted(await backend.list_models(), key=lambda m: m.modified_at, reverse=True)
        return json_response({"models": [
            {"name": m.name, "model": m.name, "modified_at": rfc3339(m.modified_at),
             "size": m.size, "digest": m.digest, "details": dict(m.details),
             "capabilities": list(m.capabilities)} for m in models]})

    @bp.post("/api/show")
    async def show() -> Response:
        fields = Fields(await read_json(), "ShowRequest")
        name = _required_model(fields)
        return json_response(dict(await backend.show(name, fields.boolean("verbose", False))))

    @bp.get("/api/ps")
    async def ps() -> Response:
        running = sorted(await backend.ps(), key=lambda m: m.expires_at, reverse=True)
        return json_response({"models": [
            {"name": m.name, "model": m.name, "size": m.size, "digest": m.digest,
             "details": dict(m.details), "expires_at": rfc3339(m.expires_at),
             "size_vram": m.size_vram, "context_length": m.context_length}
            for m in running]})

    @bp.post("/api/copy")
    async def copy() -> Response:
        fields = Fields(await read_json(), "CopyRequest")
        source, destination = fields.string("source"), fields.string("destination")
        if not source or not destination:
            raise BadRequest("source and destination are required")
        await backend.copy(source, destination)
        return empty_response()

    @bp.delete("/api/delete")
    async def delete() -> Response:
        fields = Fields(await read_json(), "DeleteRequest")
        await backend.delete(_required_model(fields))
        return empty_response()

    @bp.route("/api/blobs/<digest>", methods=["HEAD", "POST"])
    async def blob(digest: str) -> Response:
        if not DIGEST.fullmatch(digest):
            raise InvalidDigest(digest)
        digest = digest.lower()
        exists = await backend.blob_exists(digest)
        if request.method == "HEAD":
            if not exists:
                return json_response({"error": f'blob "{digest}" not found'}, 404)
            return empty_response()
        if exists:
            async for _ in request.body:  # drain, so the connection can be reused
                pass
            return empty_response(200)
        await backend.write_blob(digest, _body_chunks(request.body))
        return empty_response(201)

    async def progress(items: AsyncIterator[Mapping[str, Any]], stream: bool) -> Response:
        primed = await prime(items)
        if stream:
            return ndjson(primed, dict)
        last: Mapping[str, Any] = {}
        async with aclosing(primed):
            async for item in primed:
                last = item
        return json_response(dict(last))

    @bp.post("/api/create")
    async def create() -> Response:
        body = await read_json()
        fields = Fields(body, "CreateRequest")
        _required_model(fields)
        return await progress(backend.create(body), fields.boolean("stream", True))

    @bp.post("/api/pull")
    async def pull() -> Response:
        fields = Fields(await read_json(), "PullRequest")
        items = backend.pull(_required_model(fields), insecure=fields.boolean("insecure", False))
        return await progress(items, fields.boolean("stream", True))

    @bp.post("/api/push")
    async def push() -> Response:
        fields = Fields(await read_json(), "PushRequest")
        items = backend.push(_required_model(fields), insecure=fields.boolean("insecure", False))
        return await progress(items, fields.boolean("stream", True))

    return bp


async def _body_chunks(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The request body as it arrives, without holding all of it."""
    async for chunk in body:
        if chunk:
            yield chunk
