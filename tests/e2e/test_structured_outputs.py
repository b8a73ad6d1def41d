"""Structured outputs end to end with the real smollm2:135m over real HTTP: `format`,
`response_format`, grammars and regexes hold on every sample, through the official clients;
schemas the matcher cannot enforce are refused up front; logprobs in both APIs' shapes."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import httpx
import jsonschema
import ollama
import openai
import pydantic
import pytest
import trio
from langchain_ollama import ChatOllama

from tests.e2e.conftest import MODEL, start
from trio_llm.config import Host

# Three schemas that between them have nested objects, arrays of enums, required properties,
# integers with bounds and string patterns. Strings and arrays are bounded, so a complete
# object always fits in NUM_PREDICT tokens and every sample must end with done_reason "stop".
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "address": {"type": "object",
                    "properties": {"city": {"type": "string", "maxLength": 20},
                                   "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                    "required": ["city", "zip"], "additionalProperties": False},
    },
    "required": ["name", "age", "address"], "additionalProperties": False,
}
ORDER = {
    "type": "object",
    "properties": {
        "items": {"type": "array", "items": {"enum": ["apple", "bread", "milk", "tea"]},
                  "minItems": 1, "maxItems": 4},
        "quantity": {"type": "integer", "minimum": 1, "maximum": 10},
        "priority": {"enum": ["low", "normal", "high"]},
        "express": {"type": "boolean"},
    },
    "required": ["items", "quantity", "priority"], "additionalProperties": False,
}
EVENT = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 30},
        "year": {"type": "integer", "minimum": 1900, "maximum": 2100},
        "tags": {"type": "array", "items": {"enum": ["music", "sport", "art", "food"]},
                 "maxItems": 3},
        "venue": {"type": "object",
                  "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"},
                                 "seats": {"type": "integer", "minimum": 10,
                                           "maximum": 90000}},
                  "required": ["code", "seats"], "additionalProperties": False},
    },
    "required": ["title", "year", "tags", "venue"], "additionalProperties": False,
}
SCHEMAS = {"person": PERSON, "order": ORDER, "event": EVENT}
SUBJECTS = ["a baker", "a pilot", "a chess player", "a nurse", "a farmer", "a poet",
            "a plumber", "a judge", "a sailor", "a dentist", "a painter", "a miner",
            "a teacher", "a chef", "a drummer", "a florist", "a librarian", "a tailor",
            "a surgeon", "a cyclist"]
NUM_PREDICT = 160
END_TOKENS = ("<|im_end|>", "<|endoftext|>")   # SmolLM2's end-of-generation tokens
HOT = 0.9


def prompt(kind: str, subject: str) -> str:
    return {"person": f"Invent {subject} and describe them as JSON.",
            "order": f"What would {subject} buy at the corner shop? Answer in JSON.",
            "event": f"Describe an event that {subject} would enjoy, as JSON."}[kind]


def short_json(subject: str) -> str:
    return f"Give the name and the favourite food of {subject} as a short JSON object."


async def all_of(jobs: list[Callable[[], Awaitable[Any]]], limit: int = 4) -> list[Any]:
    """Run the jobs concurrently (`limit` at a time, the server's slots), results in order."""
    results: list[Any] = [None] * len(jobs)
    gate = trio.Semaphore(limit)

    async def run(i: int) -> None:
        async with gate:
            results[i] = await jobs[i]()

    async with trio.open_nursery() as nursery:
        for i in range(len(jobs)):
            nursery.start_soon(run, i)
    return results


@pytest.fixture
async def host(nursery: trio.Nursery, models_dir: Path) -> Host:
    return (await start(nursery, models_dir, num_parallel=4))[0]


@pytest.fixture
async def http(host: Host) -> httpx.AsyncClient:
    async with httpx.AsyncClient(base_url=host.url, timeout=300) as client:
        yield client


async def chat(http: httpx.AsyncClient, content: str, **body: Any) -> dict[str, Any]:
    reply = await http.post("/api/chat", json={
        "model": MODEL, "stream": False, "messages": [{"role": "user", "content": content}],
        **body})
    assert reply.status_code == 200, reply.text
    return reply.json()


@pytest.mark.full  # every sample of the corpus: ~12 s; the schema tests below stay fast
async def test_every_hot_sample_validates_against_its_schema_on_api_chat(
        http: httpx.AsyncClient) -> None:
    jobs = [lambda kind=kind, seed=seed, subject=subject: chat(
                http, prompt(kind, subject), format=SCHEMAS[kind],
                options={"temperature": HOT, "seed": seed, "num_predict": NUM_PREDICT})
            for kind in SCHEMAS for seed, subject in enumerate(SUBJECTS)]
    # an unconstrained greedy request shares the batches and is not disturbed by them
    plain = {"temperature": 0, "num_predict": 24}
    alone = await chat(http, "Name three colours.", options=plain)
    jobs.append(lambda: chat(http, "Name three colours.", options=plain))
    replies = await all_of(jobs)
    assert replies[-1]["message"]["content"] == alone["message"]["content"]
    for reply, (kind, subject) in zip(replies, [(k, s) for k in SCHEMAS for s in SUBJECTS],
                                      strict=False):
        assert reply["done_reason"] == "stop", (kind, subject, reply)
        jsonschema.validate(json.loads(reply["message"]["content"]), SCHEMAS[kind])


async def test_format_json_always_parses_as_an_object_unless_it_says_it_was_cut(
        http: httpx.AsyncClient) -> None:
    budget = 160
    jobs = [lambda seed=seed, subject=subject: chat(
                http, short_json(subject), format="json",
                options={"temperature": HOT, "seed": seed, "num_predict": budget})
            for seed, subject in enumerate(SUBJECTS[:8])]
    replies = await all_of(jobs)
    for reply in replies:
        if reply["done_reason"] == "length":   # any JSON is unbounded: num_predict can cut it
            assert reply["eval_count"] == budget
        else:
            assert reply["done_reason"] == "stop"
            assert isinstance(json.loads(reply["message"]["content"]), dict)
    assert sum(reply["done_reason"] == "stop" for reply in replies) >= len(replies) // 2


async def test_openai_response_format_json_schema_and_json_object_hold(host: Host) -> None:
    client = openai.AsyncOpenAI(base_url=f"{host.url}/v1", api_key="unused")

    async def complete(content: str, response_format: dict[str, Any], seed: int) -> Any:
        done = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": content}],
            response_format=response_format, temperature=HOT, top_p=0.9, seed=seed,
            max_tokens=NUM_PREDICT)
        return done.choices[0]

    jobs = [lambda kind=kind, seed=seed, subject=subject: complete(
                prompt(kind, subject), {"type": "json_schema", "json_schema": {
                    "name": kind, "schema": SCHEMAS[kind]}}, seed)
            for kind in SCHEMAS for seed, subject in enumerate(SUBJECTS[:4])]
    jobs += [lambda seed=seed, subject=subject: complete(short_json(subject),
                                                         {"type": "json_object"}, seed)
             for seed, subject in enumerate(SUBJECTS[:4])]
    choices = await all_of(jobs)
    kinds = [k for k in SCHEMAS for _ in SUBJECTS[:4]] + [None] * 4
    for choice, kind in zip(choices, kinds, strict=True):
        if kind is None:                      # any JSON object: parses unless cut, and says so
            assert choice.finish_reason in ("stop", "length")
            if choice.finish_reason == "stop":
                assert isinstance(json.loads(choice.message.content), dict)
        else:
            assert choice.finish_reason == "stop", choice
            jsonschema.validate(json.loads(choice.message.content), SCHEMAS[kind])
    assert sum(c.finish_reason == "stop" for c in choices[-4:]) >= 1


class Address(pydantic.BaseModel):
    city: str = pydantic.Field(max_length=20)
    zip: str = pydantic.Field(pattern=r"^[0-9]{5}$")


class Person(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=24)
    age: int = pydantic.Field(ge=0, le=120)
    favourite_colours: list[Literal["red", "green", "blue"]] = pydantic.Field(max_length=3)
    address: Address


# Person's schema bounds every field (at most ~300 characters with the allowed whitespace), so
# this many tokens always reach the end of the object: "stop", never "length".
PERSON_TOKENS = 400


async def test_the_official_clients_return_validated_objects(host: Host) -> None:
    question = "Invent a person who lives in Paris."
    options = {"temperature": HOT, "seed": 7, "num_predict": PERSON_TOKENS}
    reply = await ollama.AsyncClient(host=host.url).chat(
        model=MODEL, messages=[{"role": "user", "content": question}],
        format=Person.model_json_schema(), options=options)
    assert reply.done_reason == "stop"
    assert isinstance(Person.model_validate_json(reply.message.content), Person)

    parsed = await openai.AsyncOpenAI(base_url=f"{host.url}/v1", api_key="unused") \
        .chat.completions.parse(model=MODEL, messages=[{"role": "user", "content": question}],
                                response_format=Person, temperature=HOT, seed=7,
                                max_tokens=PERSON_TOKENS)
    assert isinstance(parsed.choices[0].message.parsed, Person)

    structured = ChatOllama(model=MODEL, base_url=host.url, temperature=HOT, seed=7,
                            num_predict=PERSON_TOKENS).with_structured_output(Person)
    # LangChain's async path wants asyncio; its sync one runs in a thread here, as under trio
    assert isinstance(await trio.to_thread.run_sync(structured.invoke, question), Person)


UNENFORCEABLE = [
    ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "uniqueItems"),
    ({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, "not"),
    ({"$ref": "https://schemas.example/person.json"}, "https://schemas.example/person.json"),
    ({"type": "string", "pattern": "[a-"}, "unclosed character class"),
    ({"type": "object", "properties": 5}, "properties must be an object"),
    ({"type": "strnig"}, "strnig"),
    ({"type": "array", "x-guidance": {"lenient": True}, "contains": {"type": "integer"}},
     "contains"),
]


async def test_a_schema_that_cannot_be_enforced_is_a_400_naming_it(
        http: httpx.AsyncClient) -> None:
    for fmt, named in UNENFORCEABLE:
        for route, body in (("/api/chat", {"format": fmt, "messages": [
                                {"role": "user", "content": "hi"}]}),
                            ("/api/generate", {"format": fmt, "prompt": "hi"}),
                            ("/v1/chat/completions", {
                                "messages": [{"role": "user", "content": "hi"}],
                                "response_format": {"type": "json_schema", "json_schema": {
                                    "name": "x", "schema": fmt}}})):
            reply = await http.post(route, json={"model": MODEL, **body})
            assert reply.status_code == 400, (route, reply.text)
            error = reply.json()["error"]
            assert named in (error["message"] if isinstance(error, dict) else error)
        ok = await chat(http, "Say hi.", options={"temperature": 0, "num_predict": 4})
        assert ok["done"] is True                            # and the server keeps serving


@pytest.mark.parametrize("body", [
    {"options": {"regex": "(?=a)b"}}, {"options": {"grammar": "start: undefined_rule"}},
    {"options": {"grammar": "root ::= ("}}, {"format": "json", "options": {"regex": "[0-9]+"}},
    {"options": {"regex": 5}}, {"top_logprobs": 21}, {"top_logprobs": -1},
])
async def test_bad_grammars_regexes_and_top_logprobs_are_400(http: httpx.AsyncClient,
                                                             body: dict[str, Any]) -> None:
    reply = await http.post("/api/generate", json={"model": MODEL, "prompt": "hi", **body})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]


async def test_grammar_and_regex_options_constrain_the_output(host: Host,
                                                              http: httpx.AsyncClient) -> None:
    hot = {"temperature": HOT, "num_predict": 40}
    digits = [(await http.post("/api/generate", json={
        "model": MODEL, "prompt": "Tell me about the weather.", "stream": False,
        "options": {**hot, "seed": seed, "regex": "[0-9]{1,8}"}})).json() for seed in range(3)]
    for reply in digits:
        assert re.fullmatch(r"[0-9]{1,8}", reply["response"]), reply
    lark = 'start: "The answer is " ANSWER "."\nANSWER: "yes" | "no" | "maybe"'
    gbnf = 'root ::= "Colour: " ("red" | "green" | "blue") "!"'
    for grammar, shape in ((lark, r"The answer is (yes|no|maybe)\."),
                           (gbnf, r"Colour: (red|green|blue)!")):
        reply = await chat(http, "Answer me.", options={**hot, "grammar": grammar})
        assert re.fullmatch(shape, reply["message"]["content"]), reply
        assert reply["done_reason"] == "stop"
    client = openai.AsyncOpenAI(base_url=f"{host.url}/v1", api_key="unused")
    done = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What year is it?"}], max_tokens=8,
        extra_body={"regex": "[12][0-9]{3}"})
    assert re.fullmatch(r"[12][0-9]{3}", done.choices[0].message.content)
    cut = await http.post("/api/generate", json={
        "model": MODEL, "prompt": "Count.", "stream": False,
        "options": {"num_predict": 3, "regex": "[0-9]{20}", "temperature": 0}})
    assert cut.json()["done_reason"] == "length"     # cut short, and says so


def check_logprobs(entries: list[dict[str, Any]], top_n: int) -> None:
    """Each step: the sampled (greedy) token is the top-1, the list is sorted, sums to <= 1."""
    assert entries
    for entry in entries:
        top = entry["top_logprobs"]
        assert len(top) == top_n
        values = [t["logprob"] for t in top]
        assert values == sorted(values, reverse=True)
        assert math.fsum(math.exp(v) for v in values) <= 1 + 1e-9
        assert (top[0]["token"], top[0]["logprob"]) == (entry["token"], entry["logprob"])
        if "bytes" in entry:                 # the ollama client's model leaves them out
            assert bytes(entry["bytes"]).decode("utf-8", "replace") == entry["token"]


async def test_logprobs_in_ollamas_shape_streamed_per_chunk(http: httpx.AsyncClient,
                                                            host: Host) -> None:
    greedy = {"temperature": 0, "num_predict": 12}
    whole = await chat(http, "Why is the sky blue?", options=greedy, logprobs=True,
                       top_logprobs=5)
    check_logprobs(whole["logprobs"], 5)
    assert "".join(e["token"] for e in whole["logprobs"]) == whole["message"]["content"]
    assert len(whole["logprobs"]) == whole["eval_count"]
    pieces = [p async for p in await ollama.AsyncClient(host=host.url).generate(
        model=MODEL, prompt="Why is the sky blue?", options=greedy, stream=True,
        logprobs=True, top_logprobs=2)]
    streamed = [lp for p in pieces if p.logprobs for lp in p.logprobs]
    assert sum(1 for p in pieces if p.logprobs) > 2          # they come with their chunks
    check_logprobs([lp.model_dump() for lp in streamed], 2)
    masked = await chat(http, "Pick a number.", logprobs=True, top_logprobs=20,
                        options={**greedy, "regex": "[0-9]+"})
    for entry in masked["logprobs"]:      # after the mask: only digits (or the end) are listed
        assert all(t["token"].isdigit() or t["token"] in END_TOKENS
                   for t in entry["top_logprobs"])
        assert math.fsum(math.exp(t["logprob"]) for t in entry["top_logprobs"]) <= 1 + 1e-9


async def test_the_openai_client_reads_logprobs(host: Host) -> None:
    client = openai.AsyncOpenAI(base_url=f"{host.url}/v1", api_key="unused")
    done = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Why is the sky blue?"}],
        temperature=0, max_tokens=10, logprobs=True, top_logprobs=3)
    content = done.choices[0].logprobs.content
    check_logprobs([c.model_dump() for c in content], 3)
    assert "".join(c.token for c in content) == done.choices[0].message.content
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Why is the sky blue?"}],
        temperature=0, max_tokens=10, logprobs=True, top_logprobs=3, stream=True)
    streamed = [c for chunk in [chunk async for chunk in stream] if chunk.choices
                and chunk.choices[0].logprobs for c in chunk.choices[0].logprobs.content]
    assert [c.token for c in streamed] == [c.token for c in content]
    legacy = await client.completions.create(model=MODEL, prompt="The sky is", temperature=0,
                                             max_tokens=6, logprobs=2)
    lp = legacy.choices[0].logprobs
    assert "".join(lp.tokens) == legacy.choices[0].text
    assert all(len(top) == 2 and max(top.values()) == value
               for top, value in zip(lp.top_logprobs, lp.token_logprobs, strict=True))
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
