"""The errors of prompt rendering: a template that cannot be parsed, fails while it runs, or
runs past one of its budgets. Each is a 400 with the reason (and a position where there is one).
"""

from __future__ import annotations

from trio_llm.errors import BadRequest


class TemplateFailed(BadRequest):
    """A template that cannot be compiled or fails while rendering."""


class BudgetExceeded(TemplateFailed):
    """A template that ran past its time, output or iteration budget."""

    def __init__(self, budget: str, limit: str) -> None:
        super().__init__(f"template error: the template exceeded its {budget} budget ({limit})")
        self.budget = budget


def position(source: str, offset: int) -> tuple[int, int]:
    """The 1-based line and column of a character offset in `source`."""
    offset = max(0, min(offset, len(source)))
    line = source.count("\n", 0, offset) + 1
    column = offset - (source.rfind("\n", 0, offset) + 1) + 1
    return line, column


def failed_at(source: str, offset: int, message: str) -> TemplateFailed:
    """A TemplateFailed naming the line and column where the problem is."""
    line, column = position(source, offset)
    return TemplateFailed(f"template error: line {line}, column {column}: {message}")
