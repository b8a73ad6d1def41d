"""/api/tokenize and /api/detokenize: a model's own tokenizer over HTTP (llama-server's
/tokenize and /detokenize, under Ollama's /api prefix and `model` field).

`{"model", "content"}` -> `{"tokens": [ids]}`; with `"with_pieces": true` each token is
`{"id", "piece"}`, the piece being the token's text, or, when its bytes are not valid UTF-8 on
their own (part of a character split over tokens), the list of its byte values.
`add_special` (default false) adds the BOS/EOS the model asks for; `parse_special` (default
true) lets control-token texts such as `<|im_end|>` become those tokens.
`{"model", "tokens"}` -> `{"content": text}` (invalid UTF-8 becomes U+FFFD).
"""

from __future__ import annotations

import functools
from typing import Any

import trio
from quart import Blueprint, Response

from trio_llm.api.backend import Backend
from trio_llm.api.schemas import Fields, read_json
from trio_llm.api.streaming import json_response
from trio_llm.engine.tokenizer import Tokenizer
from trio_llm.errors import BadRequest

TOKENIZE_FIELDS = frozenset({"model", "content", "with_pieces", "add_special", "parse_special"})
DETOKENIZE_FIELDS = frozenset({"model", "tokens"})


def check_fields(body: dict[str, Any], known: frozenset[str]) -> None:
    """A field we do not know is a 400 naming it, never silently ignored."""
    unknown = sorted(set(body) - known)
    if unknown:
        raise BadRequest(f"unsupported field: {unknown[0]}")


def piece(tokenizer: Tokenizer, token_id: int) -> str | list[int]:
    data = tokenizer.token_bytes(token_id)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return list(data)


def blueprint(backend: Backend) -> Blueprint:
    bp = Blueprint("tokenize", __name__)

    async def model_tokenizer(f: Fields) -> Tokenizer:
        name = f.string("model")
        if not name:
            raise BadRequest("model is required")
        return await backend.tokenizer(await backend.resolve(name))

    @bp.post("/api/tokenize")
    async def tokenize() -> Response:
        f = Fields(await read_json(), "TokenizeRequest")
        check_fields(f.body, TOKENIZE_FIELDS)
        content = f.string("content")
        with_pieces = f.boolean("with_pieces", False)
        add_special, parse_special = f.boolean("add_special", False), \
            f.boolean("parse_special", True)
        tokenizer = await model_tokenizer(f)
        ids = await trio.to_thread.run_sync(functools.partial(
            tokenizer.encode, content, add_special=add_special, parse_special=parse_special))
        if not with_pieces:
            return json_response({"tokens": ids})
        return json_response({"tokens": [{"id": i, "piece": piece(tokenizer, i)} for i in ids]})

    @bp.post("/api/detokenize")
    async def detokenize() -> Response:
        f = Fields(await read_json(), "DetokenizeRequest")
        check_fields(f.body, DETOKENIZE_FIELDS)
        ids = f.ints("tokens")
        tokenizer = await model_tokenizer(f)
        bad = next((i for i in ids if not 0 <= i < tokenizer.vocab_size), None)
        if bad is not None:
            raise BadRequest(f"token {bad} is outside the vocabulary of {tokenizer.vocab_size}")
        return json_response({"content": await trio.to_thread.run_sync(tokenizer.decode, ids)})

    return bp
