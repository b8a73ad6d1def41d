"""The parse tree of a Go text/template: list nodes (text, actions, control structures) and the
pipelines, commands and operands inside actions. Every node keeps its source offset."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TextNode:
    text: str
    pos: int


@dataclass(frozen=True)
class FieldNode:
    """`.A.B`: fields looked up from dot."""

    names: tuple[str, ...]
    pos: int


@dataclass(frozen=True)
class VariableNode:
    """`$x.A.B`: a variable, then fields of it (`$` is the data the template was given)."""

    name: str
    names: tuple[str, ...]
    pos: int


@dataclass(frozen=True)
class ChainNode:
    """`(pipeline).A` or `fn.A`: fields of another operand's value."""

    node: Any
    names: tuple[str, ...]
    pos: int


@dataclass(frozen=True)
class IdentifierNode:
    """A function name."""

    name: str
    pos: int


@dataclass(frozen=True)
class DotNode:
    pos: int


@dataclass(frozen=True)
class NilNode:
    pos: int


@dataclass(frozen=True)
class LiteralNode:
    """A bool, number, string or character constant."""

    value: Any
    pos: int


@dataclass(frozen=True)
class CommandNode:
    args: tuple[Any, ...]
    pos: int


@dataclass(frozen=True)
class PipeNode:
    """Commands joined by `|`, with the variables it declares (`:=`) or assigns (`=`)."""

    commands: tuple[CommandNode, ...]
    pos: int
    declare: tuple[str, ...] = ()
    assign: bool = False


@dataclass(frozen=True)
class ActionNode:
    pipe: PipeNode
    pos: int


@dataclass(frozen=True)
class BranchNode:
    """`if`, `with` or `range`: a pipeline, a body, and an optional `else` body."""

    kind: str
    pipe: PipeNode
    body: tuple[Any, ...]
    else_body: tuple[Any, ...] | None
    pos: int


@dataclass(frozen=True)
class LoopControlNode:
    """`{{break}}` or `{{continue}}` inside a range."""

    kind: str
    pos: int


@dataclass
class Tree:
    """A parsed template: its nodes, its source (for positions) and the fields it names."""

    source: str
    nodes: tuple[Any, ...]
    fields: frozenset[str] = field(default_factory=frozenset)
