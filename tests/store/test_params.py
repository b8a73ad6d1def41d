"""Parameters: typed like Ollama's options, displayed the way Go prints them."""

from __future__ import annotations

import pytest

from trio_llm.formats.params import check, go_float, parse_value, show_text
from trio_llm.store import InvalidParameter


@pytest.mark.parametrize(("value", "text"), [
    (4096, "4096"), (0.7, "0.7"), (1.0, "1"), (1e-05, "1e-05"), (0.0001, "0.0001"),
    (1e6, "1e+06"), (123456, "123456"), (1234567, "1.234567e+06"), (-2.5, "-2.5"),
    (0, "0"), (0.95, "0.95"), (100000.0, "100000"), (1.5e-7, "1.5e-07"),
])
def test_numbers_print_as_go_prints_a_float64(value: float, text: str) -> None:
    assert go_float(value) == text


def test_show_text_lists_each_value_with_a_thirty_column_name() -> None:
    text = show_text({"stop": ["<|im_start|>", "<|im_end|>"], "temperature": 0.7})
    assert text.split("\n") == [
        "stop" + " " * 27 + '"<|im_start|>"',
        "stop" + " " * 27 + '"<|im_end|>"',
        "temperature" + " " * 20 + "0.7",
    ]


def test_modelfile_strings_become_typed_values() -> None:
    assert parse_value("num_ctx", "2048") == 2048
    assert parse_value("temperature", "1") == 1.0
    assert parse_value("use_mmap", "False") is False
    assert parse_value("stop", "</s>") == "</s>"


@pytest.mark.parametrize(("name", "text"), [("num_ctx", "2k"), ("num_ctx", "1.5"),
                                            ("temperature", "warm"), ("use_mmap", "yes"),
                                            ("temperature", "nan")])
def test_badly_typed_values_are_refused(name: str, text: str) -> None:
    with pytest.raises(InvalidParameter, match=f"for parameter '{name}'"):
        parse_value(name, text)


def test_unknown_parameters_are_refused() -> None:
    with pytest.raises(InvalidParameter, match="unknown parameter 'warmth'"):
        parse_value("warmth", "1")
    with pytest.raises(InvalidParameter, match="unknown parameter 'warmth'"):
        check({"warmth": 1})


def test_json_parameters_are_checked_and_coerced() -> None:
    assert check({"num_ctx": 4096.0, "temperature": 1, "stop": "x", "seed": "42"}) == {
        "num_ctx": 4096, "temperature": 1, "stop": ["x"], "seed": 42}
    for bad in ({"num_ctx": 1.5}, {"num_ctx": True}, {"stop": [1]}, {"temperature": None}):
        with pytest.raises(InvalidParameter):
            check(bad)
