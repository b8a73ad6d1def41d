"""A Go `text/template` interpreter for prompt templates, written from Go's documentation.

`parse(source)` gives a Tree (TemplateFailed with the line and column of a syntax error);
`execute(tree, data, budget)` renders it. Only the declared fields of `GoStruct` values, map keys
and the functions in `funcs.FUNCTIONS` are reachable: a template cannot reach Python objects.
"""

from __future__ import annotations

import functools

from trio_llm.prompt.gotemplate.execute import execute
from trio_llm.prompt.gotemplate.funcs import FUNCTIONS
from trio_llm.prompt.gotemplate.nodes import Tree
from trio_llm.prompt.gotemplate.parse import parse as _parse

__all__ = ["Tree", "execute", "parse"]


@functools.lru_cache(maxsize=64)
def parse(source: str) -> Tree:
    """The parse tree of a template (cached: model templates are parsed once)."""
    return _parse(source, FUNCTIONS)
