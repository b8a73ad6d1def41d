"""Constraints and logprobs at the edge: every route turns format / response_format / grammar /
regex into one checked Constraint before the backend is asked, and refuses the rest."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from trio_llm.api.backend import GenerationRequest, ModelRef
from trio_llm.api.constraints import constrained, json_schema_constraint
from trio_llm.engine.constraint import ConstraintKind
from trio_llm.errors import BadRequest
from trio_llm.testing.fake_backend import FakeBackend

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(("route", "body", "kind"), [
    ("/api/chat", {"messages": USER, "format": SCHEMA}, ConstraintKind.JSON_SCHEMA),
    ("/api/chat", {"messages": USER, "format": "json"}, ConstraintKind.JSON),
    ("/api/generate", {"prompt": "hi", "options": {"regex": "[0-9]+"}}, ConstraintKind.REGEX),
    ("/api/generate", {"prompt": "hi", "options": {"grammar": 'start: "a"'}},
     ConstraintKind.GRAMMAR),
    ("/v1/chat/completions", {"messages": USER, "response_format": {
        "type": "json_schema", "json_schema": {"name": "s", "schema": SCHEMA}}},
     ConstraintKind.JSON_SCHEMA),
    ("/v1/chat/completions", {"messages": USER, "response_format": {"type": "json_object"}},
     ConstraintKind.JSON),
    ("/v1/chat/completions", {"messages": USER, "grammar": 'root ::= "a"'},
     ConstraintKind.GRAMMAR),
    ("/v1/completions", {"prompt": "hi", "regex": "[a-z]+"}, ConstraintKind.REGEX),
    ("/v1/completions", {"prompt": "hi", "response_format": {"type": "json_object"}},
     ConstraintKind.JSON),
    ("/v1/chat/completions", {"messages": USER, "response_format": {"type": "text"}}, None),
    ("/api/chat", {"messages": USER}, None),
])
async def test_each_way_of_asking_reaches_the_backend_as_one_constraint(
        client: httpx.AsyncClient, fake: FakeBackend, route: str, body: dict[str, Any],
        kind: ConstraintKind | None) -> None:
    reply = await client.post(route, json={"model": "fake", "stream": False, **body})
    assert reply.status_code == 200, reply.text
    request = fake.requests[-1]
    assert (request.constraint.kind if request.constraint else None) == kind
    assert "grammar" not in request.options and "regex" not in request.options


@pytest.mark.parametrize(("route", "body", "named"), [
    ("/api/chat", {"messages": USER, "format": {"type": "array", "uniqueItems": True}},
     "uniqueItems"),
    ("/api/generate", {"prompt": "hi", "format": {"type": 5}}, "type must be a string"),
    ("/api/generate", {"prompt": "hi", "format": "yaml"}, "invalid format"),
    ("/api/generate", {"prompt": "hi", "options": {"regex": "("}}, "regex"),
    ("/api/generate", {"prompt": "hi", "options": {"regex": 3}}, 'option "regex"'),
    ("/api/chat", {"messages": USER, "format": "json", "options": {"grammar": 'start: "a"'}},
     "format and grammar cannot be combined"),
    ("/v1/chat/completions", {"messages": USER, "response_format": {"type": "yaml"}},
     "invalid response_format type"),
    ("/v1/chat/completions", {"messages": USER, "response_format": {
        "type": "json_schema", "json_schema": {"schema": [1]}}}, "json_schema.schema"),
    ("/v1/chat/completions", {"messages": USER, "regex": "[0-9]+", "response_format": {
        "type": "json_object"}}, "cannot be combined"),
    ("/api/chat", {"messages": USER, "top_logprobs": 21}, "top_logprobs must be between 0"),
    ("/v1/chat/completions", {"messages": USER, "top_logprobs": 30}, "top_logprobs"),
    ("/v1/completions", {"prompt": "hi", "logprobs": -1}, "top_logprobs"),
])
async def test_what_cannot_be_honoured_is_a_400_before_the_backend_is_asked(
        client: httpx.AsyncClient, fake: FakeBackend, route: str, body: dict[str, Any],
        named: str) -> None:
    before = len(fake.requests)
    reply = await client.post(route, json={"model": "fake", "stream": False, **body})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert named in (error["message"] if isinstance(error, dict) else error)
    assert len(fake.requests) == before


@pytest.mark.parametrize(("route", "body", "wanted"), [
    ("/api/generate", {"prompt": "hi", "logprobs": True}, (True, 0)),
    ("/api/chat", {"messages": USER, "logprobs": True, "top_logprobs": 5}, (True, 5)),
    ("/api/chat", {"messages": USER}, (False, 0)),
    ("/v1/chat/completions", {"messages": USER, "logprobs": True, "top_logprobs": 2},
     (True, 2)),
    ("/v1/completions", {"prompt": "hi", "logprobs": 0}, (True, 0)),
    ("/v1/completions", {"prompt": "hi", "logprobs": 3}, (True, 3)),
    ("/v1/completions", {"prompt": "hi"}, (False, 0)),
])
async def test_logprobs_requests_reach_the_backend(client: httpx.AsyncClient, fake: FakeBackend,
                                                   route: str, body: dict[str, Any],
                                                   wanted: tuple[bool, int]) -> None:
    reply = await client.post(route, json={"model": "fake", "stream": False, **body})
    assert reply.status_code == 200, reply.text
    request = fake.requests[-1]
    assert (request.logprobs, request.top_logprobs) == wanted


async def test_a_request_level_schema_constraint_is_kept_and_not_silently_combined() -> None:
    own = await json_schema_constraint(SCHEMA)
    request = GenerationRequest(ModelRef("m"), "hi", {}, constraint=own)
    assert (await constrained(request)).constraint is own
    with pytest.raises(BadRequest, match="cannot be combined"):
        await constrained(GenerationRequest(ModelRef("m"), "hi", {}, format="json",
                                            constraint=own))
