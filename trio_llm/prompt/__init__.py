"""Prompt rendering in one part: which template a model renders with, the Go `text/template`
and Jinja dialects (each in a sandbox, under a time, output and iteration budget), and the
reading of the reply as the template says the model writes it (thinking, tool calls).

The store imports the template constants (`library`) and create-time validation; the API
imports the rest. Nothing here knows HTTP, the scheduler or the engine.
"""

from __future__ import annotations

from trio_llm.prompt.errors import BudgetExceeded, TemplateFailed
from trio_llm.prompt.output import OutputParser, Piece
from trio_llm.prompt.render import chat, generate, in_worker
from trio_llm.prompt.template import (
    Dialect,
    PromptTemplate,
    ToolTags,
    capabilities,
    load,
    load_in_worker,
    special_tokens,
    template_source,
    validate,
)
from trio_llm.prompt.tools import call_schema

__all__ = ["BudgetExceeded", "Dialect", "OutputParser", "Piece", "PromptTemplate",
           "TemplateFailed", "ToolTags", "call_schema", "capabilities", "chat", "generate",
           "in_worker", "load", "load_in_worker", "special_tokens", "template_source", "validate"]
