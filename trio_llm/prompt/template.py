"""A model's prompt template: which one renders, in which dialect, and what it tells us.

The template that renders is the model's template layer (what `/api/show` reports); only a
model without one falls back to its GGUF's own Jinja `tokenizer.chat_template`, and without
either the prompt goes in as it is (Ollama's default `{{ .Prompt }}`). A template is Go
`text/template` (Ollama's TEMPLATE) or Jinja (Hugging Face's); the dialect is read from the
text. From the template follow the capabilities (`tools`, `thinking`, `insert`) and the markers
that delimit tool calls and thinking in the model's output.
"""

from __future__ import annotations

import enum
import functools
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from trio_llm.prompt import jinja
from trio_llm.prompt.errors import TemplateFailed
from trio_llm.prompt.gotemplate import Tree, parse
from trio_llm.prompt.gotemplate.nodes import (
    ActionNode,
    BranchNode,
    ChainNode,
    FieldNode,
    PipeNode,
    TextNode,
    VariableNode,
)

DEFAULT = "{{ .Prompt }}"        # Ollama's template for a model without one
MAX_TEMPLATE_CHARS = 1024 * 1024  # library templates are a few kB; the largest GGUF ones ~30 kB
_GO_MARK = re.compile(r"\{\{-?\s*(?:\.[A-Z$]|\$|(?:if|range|with|end|else)\b)")
THINK_TAGS = ("<think>", "</think>")
_KNOWN_CALL_TAGS = (("<tool_call>", "</tool_call>"), ("[TOOL_CALLS]", ""),
                    ("<|python_tag|>", ""))


class Dialect(enum.Enum):
    GO = "go"
    JINJA = "jinja"


@dataclass(frozen=True)
class ToolTags:
    """How the model writes a call: after one of `opening` (empty: a bare JSON object or
    array), optionally followed by `closing`."""

    opening: tuple[str, ...]
    closing: str = ""

    @property
    def bare(self) -> bool:
        return not self.opening


@dataclass(frozen=True)
class PromptTemplate:
    source: str
    dialect: Dialect

    @property
    def tree(self) -> Tree:
        return parse(self.source)

    @functools.cached_property
    def capabilities(self) -> frozenset[str]:
        """`tools`, `thinking` and `insert`, as far as the template supports them."""
        caps = set()
        if self.dialect is Dialect.GO:
            fields = self.tree.fields
            caps.update(name for field, name in (("Tools", "tools"), ("Suffix", "insert"),
                                                 ("Thinking", "thinking"),
                                                 ("Think", "thinking")) if field in fields)
        else:
            used = jinja.variables_used(self.source)
            if "tools" in used:
                caps.add("tools")
            if "suffix" in used:
                caps.add("insert")
            if "enable_thinking" in used or "</think>" in self.source or \
                    jinja.names_attribute(self.source, frozenset({"reasoning_content",
                                                                  "thinking"})):
                caps.add("thinking")
        return frozenset(caps)

    @functools.cached_property
    def tool_tags(self) -> ToolTags:
        """The call markers: the text a Go template writes before the calls inside its
        `{{ if .ToolCalls }}` block (and after them); for Jinja, a known marker it names."""
        extra = tuple(tag for tag, _ in _KNOWN_CALL_TAGS[2:] if tag in self.source)
        if self.dialect is Dialect.GO:
            block = next((node for node in _walk(self.tree.nodes) if isinstance(node, BranchNode)
                          and node.kind == "if" and _pipe_names(node.pipe, "ToolCalls")), None)
            if block is not None:
                opening, closing = _block_tags(block.body)
                tags = ((opening,) if opening else ()) + tuple(t for t in extra if t != opening)
                return ToolTags(tags, closing)
            return ToolTags(extra)
        for tag, closing in _KNOWN_CALL_TAGS:
            if tag in self.source:
                return ToolTags((tag,), closing)
        return ToolTags(())

    @functools.cached_property
    def thinking_tags(self) -> tuple[str, str]:
        """The text around `{{ .Thinking }}` where a Go template writes a message's thinking
        (inside the range over `.Messages`); `<think>`/`</think>` otherwise."""
        if self.dialect is Dialect.GO:
            for body in _lists_printing_thinking(self.tree.nodes, in_messages=False):
                first, last = body[0], body[-1]
                opening = first.text.strip() if isinstance(first, TextNode) else ""
                closing = last.text.strip() if isinstance(last, TextNode) else ""
                if opening and closing:
                    return opening, closing
        return THINK_TAGS


_LOADED: dict[str, PromptTemplate] = {}   # parsed templates by source, oldest first
_LOADED_KEPT = 64
_LOADED_LOCK = threading.Lock()           # load runs in worker threads


def load(source: str) -> PromptTemplate:
    """The template for `source` ("" is Ollama's default), its dialect found by parsing:
    TemplateFailed, naming the line and column, when it is neither. Kept once parsed."""
    known = _LOADED.get(source)
    if known is None:
        known = _parse(source)
        with _LOADED_LOCK:
            while len(_LOADED) >= _LOADED_KEPT:
                _LOADED.pop(next(iter(_LOADED)))
            _LOADED[source] = known
    return known


def _parse(source: str) -> PromptTemplate:
    text = source or DEFAULT
    if len(text) > MAX_TEMPLATE_CHARS:
        raise TemplateFailed(f"template error: the template is longer than "
                             f"{MAX_TEMPLATE_CHARS} characters")
    go_like = _GO_MARK.search(text) is not None
    if "{%" in text or "{#" in text:
        order = (Dialect.JINJA, Dialect.GO) if go_like else (Dialect.JINJA,)
    else:
        order = (Dialect.GO, Dialect.JINJA)
    errors: dict[Dialect, TemplateFailed] = {}
    for dialect in order:
        try:
            if dialect is Dialect.GO:
                parse(text)
            else:
                jinja.check(text)
            return PromptTemplate(text, dialect)
        except TemplateFailed as exc:
            errors[dialect] = exc
    raise errors[Dialect.GO] if go_like and Dialect.GO in errors else errors[order[0]]


async def load_in_worker(source: str) -> PromptTemplate:
    """`load` off the event loop: a template new to the cache is parsed in a worker thread, a
    known one comes back at once (a request's hop fewer, each of which waits for the GIL)."""
    known = _LOADED.get(source)
    return known if known is not None else await trio.to_thread.run_sync(load, source)


def validate(source: str) -> None:
    """Check a template a model is being created with (TemplateFailed if it cannot parse)."""
    load(source)


def template_source(layer: str | None, gguf_template: str) -> str:
    """The template that renders: the template layer; without one, the GGUF's Jinja."""
    return gguf_template if layer is None else layer


def capabilities(source: str) -> frozenset[str]:
    """The template-derived capabilities of a stored template (none if it does not parse)."""
    try:
        return load(source).capabilities
    except TemplateFailed:
        return frozenset()


def special_tokens(model_info: Mapping[str, Any]) -> tuple[str, str]:
    """The BOS and EOS token texts from GGUF metadata, for templates that write them."""
    tokens = model_info.get("tokenizer.ggml.tokens") or []

    def text(key: str) -> str:
        index = model_info.get(key)
        return tokens[index] if isinstance(index, int) and 0 <= index < len(tokens) else ""

    return text("tokenizer.ggml.bos_token_id"), text("tokenizer.ggml.eos_token_id")


# ----------------------------------------------------------------------------- tree walks

def _children(node: Any) -> Sequence[Any]:
    if isinstance(node, BranchNode):
        return node.body + (node.else_body or ())
    return ()


def _walk(nodes: Sequence[Any]) -> Iterator[Any]:
    for node in nodes:
        yield node
        yield from _walk(_children(node))


def _pipe_names(pipe: PipeNode, name: str) -> bool:
    """Whether a pipeline names the field `name` (in `.X`, `$.X`, `(..).X`, nested pipes)."""
    for command in pipe.commands:
        for arg in command.args:
            if isinstance(arg, FieldNode | VariableNode | ChainNode) and name in arg.names:
                return True
            inner = arg.node if isinstance(arg, ChainNode) else arg
            if isinstance(inner, PipeNode) and _pipe_names(inner, name):
                return True
    return False


def _block_tags(body: Sequence[Any]) -> tuple[str, str]:
    texts = [node.text for node in body if isinstance(node, TextNode)]
    if not texts or not isinstance(body[0], TextNode):
        return "", ""
    opening = texts[0].split("{", 1)[0].strip()
    if opening.endswith("[") and len(opening) > 1:
        opening = opening[:-1].strip()
    if opening in ("[", "{"):
        opening = ""
    closing = ""
    if isinstance(body[-1], TextNode) and len(body) > 1:
        tail = body[-1].text
        cut = max(tail.rfind("}"), tail.rfind("]"))
        closing = tail[cut + 1:].strip() if cut >= 0 else tail.strip()
    return opening, closing


def _lists_printing_thinking(nodes: Sequence[Any], in_messages: bool
                             ) -> Iterator[Sequence[Any]]:
    """Each list (inside a range over `.Messages`) holding an action that prints
    `.Thinking`."""
    for node in nodes:
        if in_messages and isinstance(node, ActionNode) and any(
                isinstance(arg, FieldNode) and arg.names[:1] == ("Thinking",)
                for command in node.pipe.commands for arg in command.args):
            yield nodes
        if isinstance(node, BranchNode):
            inside = in_messages or (node.kind == "range" and _pipe_names(node.pipe,
                                                                          "Messages"))
            yield from _lists_printing_thinking(node.body, inside)
            if node.else_body:
                yield from _lists_printing_thinking(node.else_body, inside)
