"""How Ollama runs a Go template for a request (its documented rules, on our interpreter).

- A prompt with a suffix (fill-in-the-middle) renders once with `.Prompt`, `.Suffix`.
- A template that uses `.Messages` renders once with `.System` (every system message, joined
  by blank lines), `.Messages`, `.Tools`, `.Response` = "" and the thinking values.
- Any other (legacy) template renders once per turn (system?, user, assistant) with `.System`,
  `.Prompt`, `.Response`, the outputs joined; the last turn stops where `{{ .Response }}`
  stands, so generation continues there. A legacy template that names neither `.Messages`
  nor `.Response` behaves as if it ended with `{{ .Response }}`.
Consecutive messages of one role (tool results excepted) are merged with a blank line first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from trio_llm.prompt import go_values
from trio_llm.prompt.budget import Budget
from trio_llm.prompt.gotemplate import Tree, execute, parse
from trio_llm.prompt.gotemplate.nodes import (
    ActionNode,
    BranchNode,
    CommandNode,
    FieldNode,
    PipeNode,
)


@dataclass(frozen=True)
class Thinking:
    """The thinking values a template sees: `.Think`, `.ThinkLevel`, `.IsThinkSet`."""

    think: bool = False
    level: str = ""
    is_set: bool = False

    @classmethod
    def from_request(cls, think: bool | str | None) -> Thinking:
        if think is None:
            return cls()
        if isinstance(think, str):
            return cls(True, "high" if think == "max" else think, True)
        return cls(think, "medium" if think else "", True)

    def values(self) -> dict[str, Any]:
        return {"Think": self.think, "ThinkLevel": self.level, "IsThinkSet": self.is_set}


def collate(messages: Sequence[Mapping[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The system text (all system messages joined) and the messages, consecutive ones of
    the same role (except tool results) merged with a blank line."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for raw in messages:
        message = dict(raw)
        if message.get("role") == "system":
            system.append(str(message.get("content") or ""))
        if out and out[-1].get("role") == message.get("role") and message.get("role") != "tool":
            out[-1]["content"] = f"{out[-1].get('content') or ''}\n\n{message.get('content') or ''}"
        else:
            out.append(message)
    return "\n\n".join(system), out


def uses(tree: Tree, name: str) -> bool:
    """Whether the template names a field (`.Name`, `$.Name`, `$x.Name` anywhere)."""
    return name in tree.fields


def render_messages(source: str, messages: Sequence[Mapping[str, Any]], *,
                    tools: Sequence[Mapping[str, Any]] | None, thinking: Thinking,
                    budget: Budget) -> str:
    """A conversation through a Go template (Ollama's chat rules)."""
    tree = parse(source)
    system, collated = collate(messages)
    if uses(tree, "Messages"):
        data = {"System": system, "Messages": [go_values.message(m) for m in collated],
                "Tools": go_values.tools(tools), "Response": "", **thinking.values()}
        return execute(tree, data, budget)
    return _legacy(tree, collated, thinking, budget)


def render_fill_in(source: str, prompt: str, suffix: str, thinking: Thinking,
                   budget: Budget) -> str:
    tree = parse(source)
    data = {"Prompt": prompt, "Suffix": suffix, "Response": "", **thinking.values()}
    return execute(tree, data, budget)


def _legacy(tree: Tree, messages: list[dict[str, Any]], thinking: Thinking,
            budget: Budget) -> str:
    if not uses(tree, "Response"):
        tree = replace(tree, nodes=tree.nodes + (_RESPONSE,))
    parts: list[str] = []
    turn = {"System": "", "Prompt": "", "Response": ""}

    def flush() -> None:
        parts.append(execute(tree, {**turn, **thinking.values()}, budget))
        turn.update(System="", Prompt="", Response="")

    for message in messages:
        role, content = message.get("role"), str(message.get("content") or "")
        if role == "system":
            if turn["Prompt"] or turn["Response"]:
                flush()
            turn["System"] = content
        elif role == "user":
            if turn["Response"]:
                flush()
            turn["Prompt"] = content
        elif role == "assistant":
            turn["Response"] = content
    head, _ = _cut_at_response(tree.nodes)
    parts.append(execute(tree, {**turn, **thinking.values()}, budget, nodes=tuple(head)))
    return "".join(parts)


# `{{ .Response }}`, appended to a legacy template that has neither it nor `.Messages`.
_RESPONSE = ActionNode(PipeNode((CommandNode((FieldNode(("Response",), 0),), 0),), 0), 0)


def _names_response(node: Any) -> bool:
    """Whether an action prints something naming `.Response` (a field, not `$.Response`)."""
    if not isinstance(node, ActionNode):
        return False
    for command in node.pipe.commands:
        for arg in command.args:
            if isinstance(arg, FieldNode) and "Response" in arg.names:
                return True
    return False


def _cut_at_response(nodes: Sequence[Any]) -> tuple[list[Any], bool]:
    """The nodes up to and including the first action naming `.Response`, in document order
    (inside structures too: a structure that holds the cut keeps what comes before it)."""
    kept: list[Any] = []
    for node in nodes:
        if _names_response(node):
            kept.append(node)
            return kept, True
        if isinstance(node, BranchNode):
            body, cut = _cut_at_response(node.body)
            if cut:
                kept.append(replace(node, body=tuple(body), else_body=None))
                return kept, True
            if node.else_body is not None:
                else_body, cut = _cut_at_response(node.else_body)
                if cut:
                    kept.append(replace(node, else_body=tuple(else_body)))
                    return kept, True
        kept.append(node)
    return kept, False

