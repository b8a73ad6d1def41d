"""A model's streamed reply split into thinking, answer and tool calls, as the template says
the model writes them: thinking first (when the request thinks), then the answer, in which
tool calls are found (when tools were offered)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trio_llm.prompt.template import PromptTemplate, ToolTags
from trio_llm.prompt.thinking import ThinkingParser
from trio_llm.prompt.tools import ToolCallParser


@dataclass
class Piece:
    text: str = ""
    thinking: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.text or self.thinking or self.tool_calls)


class OutputParser:
    """Feed it the reply's text as it comes; `flush()` at the end."""

    def __init__(self, thinking: ThinkingParser | None, tools: ToolCallParser | None) -> None:
        self.thinking = thinking
        self.tools = tools

    @classmethod
    def for_request(cls, template: PromptTemplate, prompt: str, *, think: bool,
                    tools: Sequence[Mapping[str, Any]] | None,
                    tool_tags: ToolTags | None = None) -> OutputParser | None:
        """The parser a request needs (None: the reply is all answer). `tool_tags` replaces
        the template's markers (a constrained call is bare JSON)."""
        thinking = ThinkingParser(*template.thinking_tags, prompt=prompt) if think else None
        calls = ToolCallParser(tool_tags or template.tool_tags, tools, prompt=prompt) \
            if tools else None
        return cls(thinking, calls) if thinking or calls else None

    @property
    def closing_thinking(self) -> str:
        """The text that would close the thinking now: its closing tag while the reply is
        inside its thinking, else "" (a thinking budget writes it for the model)."""
        if self.thinking is None or not self.thinking.in_thinking:
            return ""
        return self.thinking.closing

    def _answer(self, text: str, piece: Piece) -> None:
        if self.tools is None:
            piece.text += text
            return
        content, calls = self.tools.feed(text)
        piece.text += content
        piece.tool_calls.extend(calls)

    def feed(self, text: str) -> Piece:
        piece = Piece()
        if self.thinking is not None:
            piece.thinking, text = self.thinking.feed(text)
        self._answer(text, piece)
        return piece

    def flush(self) -> Piece:
        piece = Piece()
        text = ""
        if self.thinking is not None:
            piece.thinking, text = self.thinking.flush()
        self._answer(text, piece)
        if self.tools is not None:
            piece.text += self.tools.flush()
        return piece
