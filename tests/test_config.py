"""Environment variables are read with Ollama's forms and defaults."""

from __future__ import annotations

import math

import pytest

from trio_llm import config


@pytest.mark.parametrize("text, seconds", [
    ("5m", 300), ("1h30m", 5400), ("24h", 86400), ("300ms", 0.3), ("10", 10), ("0", 0),
    ("-1", math.inf), ("-1m", math.inf), ("1.5h", 5400), (" '2m' ", 120),
])
def test_durations_parse_like_go(text: str, seconds: float) -> None:
    assert config.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5x", "m5", "1h 30m", "nan", "abc"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        config.parse_duration(text)


@pytest.mark.parametrize("text, url", [
    ("", "http://127.0.0.1:11434"), ("0.0.0.0", "http://0.0.0.0:11434"),
    ("example.com:8080", "http://example.com:8080"), (":9000", "http://127.0.0.1:9000"),
    ("http://10.0.0.1:1234", "http://10.0.0.1:1234"), ("[::1]:5000", "http://[::1]:5000"),
    ("https://host", "https://host:443"), ("http://host", "http://host:80"),
])
def test_ollama_host_forms(text: str, url: str) -> None:
    assert config.get("OLLAMA_HOST", {"OLLAMA_HOST": text}).url == url


def test_defaults_and_invalid_values() -> None:
    assert config.get("OLLAMA_NUM_PARALLEL", {}) == 1
    assert config.get("OLLAMA_MAX_QUEUE", {"OLLAMA_MAX_QUEUE": "lots"}) == 512
    assert config.get("OLLAMA_KEEP_ALIVE", {}) == 300
    assert config.get("OLLAMA_NOPRUNE", {"OLLAMA_NOPRUNE": "maybe"}) is True
    assert config.get("OLLAMA_NOPRUNE", {"OLLAMA_NOPRUNE": "0"}) is False
    assert set(config.snapshot({})) == {s.name for s in config.SETTINGS}


@pytest.mark.parametrize("text, size", [
    ("0", 0), ("268435456", 256 << 20), ("256MiB", 256 << 20), ("1GiB", 1 << 30),
    ("512mb", 512_000_000), ("1.5 GiB", 3 << 29), ("64k", 64_000),
])
def test_prompt_cache_sizes_parse_with_or_without_a_unit(text: str, size: int) -> None:
    assert config.get("TRIO_LLM_PROMPT_CACHE", {"TRIO_LLM_PROMPT_CACHE": text}) == size


def test_the_prompt_cache_defaults_to_256_mib_and_ignores_nonsense() -> None:
    assert config.get("TRIO_LLM_PROMPT_CACHE", {}) == 256 << 20
    for bad in ("lots", "-5MiB", "12 parsecs"):
        assert config.get("TRIO_LLM_PROMPT_CACHE", {"TRIO_LLM_PROMPT_CACHE": bad}) == 256 << 20
