"""Request validation at the edge: types, options, keep_alive, think, format; Ollama's wording."""

from __future__ import annotations

import logging
import math

import pytest

from trio_llm.api.schemas import (
    ChatRequest,
    EmbedRequest,
    GenerateRequest,
    parse_keep_alive,
    parse_options,
    rfc3339,
)
from trio_llm.errors import BadRequest


def test_options_are_typed_and_ints_accept_json_numbers() -> None:
    options = parse_options({"temperature": 0, "num_predict": 12.0, "top_k": 40.7,
                             "stop": ["\n", "User:"], "use_mmap": False, "seed": 42})
    assert options == {"temperature": 0.0, "num_predict": 12, "top_k": 40,
                       "stop": ["\n", "User:"], "use_mmap": False, "seed": 42}
    assert isinstance(options["temperature"], float)


@pytest.mark.parametrize(("options", "message"), [
    ({"temperature": "hot"}, 'option "temperature" must be of type float32'),
    ({"num_ctx": "big"}, 'option "num_ctx" must be of type integer'),
    ({"num_ctx": True}, 'option "num_ctx" must be of type integer'),
    ({"use_mmap": 1}, 'option "use_mmap" must be of type boolean'),
    ({"stop": [1, 2]}, 'option "stop" must be of type array of strings'),
])
def test_wrong_option_types_are_rejected_with_ollamas_words(options: dict, message: str) -> None:
    with pytest.raises(BadRequest) as failure:
        parse_options(options)
    assert failure.value.message == message


def test_unknown_options_are_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert parse_options({"mirostat": 2, "penalize_newline": True, "top_p": 0.5}) == \
            {"top_p": 0.5}
    assert 'option="mirostat"' in caplog.text


@pytest.mark.parametrize(("value", "seconds"), [
    (None, None), ("5m", 300.0), ("1h30m", 5400.0), (3600, 3600.0), (0, 0.0), ("0", 0.0),
    (-1, math.inf), ("-1m", math.inf), (1.5, 1.5),
])
def test_keep_alive_takes_durations_and_seconds(value: object, seconds: float | None) -> None:
    assert parse_keep_alive(value) == seconds


def test_bad_keep_alive_is_worded_like_go() -> None:
    with pytest.raises(BadRequest, match='time: invalid duration "soon"'):
        parse_keep_alive("soon")


def test_wrong_field_type_is_worded_like_gos_decoder() -> None:
    with pytest.raises(BadRequest) as failure:
        GenerateRequest.parse({"model": "m", "prompt": 5})
    assert failure.value.message == ("json: cannot unmarshal number into Go struct field "
                                     "GenerateRequest.prompt of type string")


def test_generate_request_defaults() -> None:
    req = GenerateRequest.parse({"model": "m"})
    assert (req.stream, req.raw, req.keep_alive, req.think, req.format) == \
        (True, False, None, None, None)


def test_think_accepts_bools_and_levels_only() -> None:
    assert GenerateRequest.parse({"model": "m", "think": "high"}).think == "high"
    assert ChatRequest.parse({"model": "m", "think": False}).think is False
    with pytest.raises(BadRequest, match='invalid think value: "loud"'):
        ChatRequest.parse({"model": "m", "think": "loud"})


def test_format_is_json_or_a_schema() -> None:
    assert GenerateRequest.parse({"model": "m", "format": "json"}).format == "json"
    schema = {"type": "object"}
    assert ChatRequest.parse({"model": "m", "format": schema}).format == schema
    with pytest.raises(BadRequest, match="invalid format"):
        GenerateRequest.parse({"model": "m", "format": "yaml"})


def test_chat_roles_are_lower_cased_and_message_types_checked() -> None:
    req = ChatRequest.parse({"model": "m", "messages": [{"role": "User", "content": "hi"}]})
    assert req.messages[0].role == "user"
    with pytest.raises(BadRequest, match="ChatRequest.messages.content of type string"):
        ChatRequest.parse({"model": "m", "messages": [{"role": "user", "content": 3}]})


def test_embed_input_is_a_string_or_a_list_of_strings() -> None:
    assert EmbedRequest.parse({"model": "m", "input": "a"}).inputs == ("a",)
    assert EmbedRequest.parse({"model": "m", "input": ["a", "b"]}).inputs == ("a", "b")
    assert EmbedRequest.parse({"model": "m"}).truncate is True
    with pytest.raises(BadRequest, match="invalid input type"):
        EmbedRequest.parse({"model": "m", "input": [1, 2]})


def test_timestamps_are_rfc3339_with_zone() -> None:
    from datetime import UTC, datetime

    assert rfc3339(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)) == \
        "2026-01-02T03:04:05.000006Z"
