"""Prompt templates (Go text/template syntax) the store writes into template layers.

CHATML writes the ChatML turns of SmolLM2's own GGUF chat template
(`<|im_start|>role\\ncontent<|im_end|>\\n`, then an open assistant turn) in the shape Ollama's
library templates use: the system prompt once, a loop over the messages (system messages are
carried by `.System`), an unfinished last assistant message left open for continuation, and a
`.Prompt` / `.Response` branch for requests without messages. Unlike that Jinja template it
adds no default system prompt: the prompt is what this template says.
"""

from __future__ import annotations

from typing import Any

CHATML = (
    "{{- if .Messages }}\n"
    "{{- if .System }}<|im_start|>system\n"
    "{{ .System }}<|im_end|>\n"
    "{{ end }}\n"
    "{{- range $i, $_ := .Messages }}\n"
    "{{- $last := eq (len (slice $.Messages $i)) 1 }}\n"
    '{{- if ne .Role "system" }}<|im_start|>{{ .Role }}\n'
    '{{ .Content }}{{ if not (and $last (eq .Role "assistant")) }}<|im_end|>\n'
    "{{ end }}\n"
    "{{- end }}\n"
    '{{- if and $last (ne .Role "assistant") }}<|im_start|>assistant\n'
    "{{ end }}\n"
    "{{- end }}\n"
    "{{- else }}\n"
    "{{- if .System }}<|im_start|>system\n"
    "{{ .System }}<|im_end|>\n"
    "{{ end }}{{ if .Prompt }}<|im_start|>user\n"
    "{{ .Prompt }}<|im_end|>\n"
    "{{ end }}<|im_start|>assistant\n"
    "{{ end }}{{ .Response }}{{ if .Response }}<|im_end|>{{ end }}"
)
CHATML_PARAMS: dict[str, Any] = {"stop": ["<|im_start|>", "<|im_end|>"]}

# A base (completion-only) model: the prompt goes to the model as it is.
PROMPT_ONLY = "{{ .Prompt }}"


def detect(chat_template: str) -> tuple[str, str, dict[str, Any]] | None:
    """A template for a GGUF's own Jinja chat template, when we recognise its format:
    (name, template, params), or None. Used by create when no TEMPLATE is given."""
    if "<|im_start|>" in chat_template and "<|im_end|>" in chat_template:
        return "chatml", CHATML, CHATML_PARAMS
    return None
