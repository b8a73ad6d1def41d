"""/api/rerank and /v1/rerank: documents ordered by how well they answer a query, in the shape
Jina, Cohere and llama-server clients read: `results: [{index, relevance_score, document?}]`,
best first.

The score is the cosine similarity of the embedding model's vectors of the query and of each
document (all embedded in one request, so in one batched forward), and the response says so
(`"method": "embedding-similarity"`). Cross-encoder rerankers (a BERT GGUF with pooling_type
rank) are not supported: such a file is refused when it loads, with a message saying so.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from quart import Blueprint, Response

from trio_llm.api import generation
from trio_llm.api.backend import Backend
from trio_llm.api.schemas import Fields, check_finite, parse_keep_alive, parse_options, read_json
from trio_llm.api.streaming import json_response
from trio_llm.api.tokenize import check_fields
from trio_llm.errors import BadRequest

METHOD = "embedding-similarity"
FIELDS = frozenset({"model", "query", "documents", "top_n", "return_documents", "options",
                    "keep_alive", "truncate"})


def document_text(value: Any, index: int) -> str:
    """A document as a string, or an object with a `text` string (Cohere's and Jina's form)."""
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        return value["text"]
    if isinstance(value, str):
        return value
    raise BadRequest(f"documents[{index}] must be a string or an object with a text string")


def cosine(a: list[float], b: list[float]) -> float:
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    norms = math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b))
    return dot / norms if norms else 0.0


def blueprint(backend: Backend) -> Blueprint:
    bp = Blueprint("rerank", __name__)

    async def rerank() -> Response:
        f = Fields(await read_json(), "RerankRequest")
        check_fields(f.body, FIELDS)
        model, query = f.string("model"), f.string("query")
        if not model:
            raise BadRequest("model is required")
        if not query:
            raise BadRequest("query is required")
        documents = [document_text(d, i) for i, d in
                     enumerate(f.array("documents", "[]string"))]
        if not documents:
            raise BadRequest("documents is required")
        top_n = f.integer("top_n")
        if top_n is not None and top_n < 1:
            raise BadRequest("top_n must be a positive integer")
        with_documents = f.boolean("return_documents", True)
        ref = await backend.resolve(model)
        generation.require(ref, "embedding", f'"{ref.name}" does not support embeddings, '
                           "which rerank uses")
        result = await backend.embed(
            ref, [query, *documents], truncate=f.boolean("truncate", True),
            options=generation.merged_options(ref, parse_options(f.obj("options"))),
            keep_alive=parse_keep_alive(f.get("keep_alive")))
        check_finite(result.embeddings)
        question, *vectors = [np.asarray(v, np.float64).tolist() for v in result.embeddings]
        scores = [cosine(question, v) for v in vectors]
        order = sorted(range(len(documents)), key=lambda i: -scores[i])[:top_n]
        results = []
        for index in order:
            item: dict[str, Any] = {"index": index, "relevance_score": scores[index]}
            if with_documents:
                item["document"] = {"text": documents[index]}
            results.append(item)
        return json_response({"model": model, "method": METHOD, "results": results,
                              "usage": {"prompt_tokens": result.prompt_eval_count,
                                        "total_tokens": result.prompt_eval_count}})

    bp.add_url_rule("/api/rerank", "api_rerank", rerank, methods=["POST"])
    bp.add_url_rule("/v1/rerank", "v1_rerank", rerank, methods=["POST"])
    return bp
