"""Details and capabilities: Ollama's names for sizes and quantization levels, and the
capabilities a template and GGUF metadata imply."""

from __future__ import annotations

import pytest

from trio_llm.prompt.library import CHATML, PROMPT_ONLY, detect
from trio_llm.store.gguf_info import (
    GGUFSummary,
    capabilities,
    human_number,
    quantization_level,
)


def summary(**flags: bool) -> GGUFSummary:
    return GGUFSummary("llama", 1, "1", "Q4_0", {}, **flags)


@pytest.mark.parametrize(("file_type", "name"), [(0, "F32"), (1, "F16"), (2, "Q4_0"),
                                                 (3, "Q4_1"), (7, "Q8_0"), (15, "Q4_K_M"),
                                                 (18, "Q6_K"), (32, "BF16"), (999, "unknown"),
                                                 (None, "unknown")])
def test_quantization_level_names_the_file_type(file_type: int | None, name: str) -> None:
    assert quantization_level(file_type) == name


@pytest.mark.parametrize(("count", "text"), [(134_515_008, "134.52M"), (8_000_000_000, "8B"),
                                             (3_212_749_824, "3.2B"), (999, "999"),
                                             (268_098_176, "268.10M"), (22_000, "22K")])
def test_parameter_counts_read_like_ollamas(count: int, text: str) -> None:
    assert human_number(count) == text


def test_capabilities_follow_the_template_and_metadata() -> None:
    assert capabilities(summary(), CHATML) == ["completion"]
    assert capabilities(summary(), PROMPT_ONLY) == ["completion"]
    assert capabilities(summary(has_pooling=True), "") == ["embedding"]
    tools = "{{ if .Tools }}{{ range .Tools }}{{ . }}{{ end }}{{ end }}{{ .Prompt }}"
    assert capabilities(summary(), tools) == ["completion", "tools"]
    fim = "<PRE>{{ .Prompt }}<SUF>{{ .Suffix }}<MID>"
    assert capabilities(summary(has_vision=True), fim) == ["completion", "insert", "vision"]
    think = "{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}"
    assert capabilities(summary(), think) == ["completion", "thinking"]


def test_only_template_actions_count_not_literal_text() -> None:
    def tools(template: str) -> bool:
        return "tools" in capabilities(summary(), template)

    assert not tools("Use .Tools wisely: {{ .Prompt }}")
    assert not tools("{{ .ToolsExtra }}")
    assert tools("{{- range $.Tools }}x{{ end }}")
    assert not tools("{{ if .Tools }")          # a template that does not parse claims nothing


def test_chatml_gguf_templates_are_recognised() -> None:
    jinja = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>"
    assert detect(jinja) is not None and detect(jinja)[0] == "chatml"
    assert detect("<start_of_turn>user") is None
