"""The Modelfile: parsed into commands with line numbers, and rendered back as `show` prints it.

Syntax: one `INSTRUCTION value` per line, instructions case-insensitive, `#` comment lines
(only at the start of a line: `#` inside a value is text), blank lines ignored. A value is
either bare (the rest of the line, trimmed), `"double quoted"` on one line (`\\"` and `\\\\`
escape), or `\"\"\"triple quoted\"\"\"` over any number of lines, kept verbatim.
PARAMETER and MESSAGE take a first word (the option name, the role) before their value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from trio_llm.errors import InvalidModelfile
from trio_llm.formats.params import modelfile_value

COMMANDS = ("from", "license", "template", "system", "adapter", "draft", "renderer", "parser",
            "parameter", "message", "requires")
ROLES = ("system", "user", "assistant")
_COMMAND_ERROR = ('command must be one of "from", "license", "template", "system", "adapter", '
                  '"draft", "renderer", "parser", "parameter", "message", or "requires"')
_HEAD = re.compile(r"\s*(\S+)(?:\s+(.*))?\Z", re.DOTALL)
_KEYED = re.compile(r"(\S+)(?:\s+(.*))?\Z", re.DOTALL)


@dataclass(frozen=True)
class Command:
    """One instruction: `name` lower-cased, `key` the PARAMETER name or MESSAGE role."""

    name: str
    value: str
    line: int
    key: str = ""


@dataclass
class Modelfile:
    """A parsed Modelfile: its commands in order."""

    commands: list[Command] = field(default_factory=list)

    def values(self, name: str) -> list[Command]:
        return [c for c in self.commands if c.name == name]

    def last(self, name: str) -> Command | None:
        found = self.values(name)
        return found[-1] if found else None


def parse(text: str) -> Modelfile:
    """Parse Modelfile text. Raises InvalidModelfile with the 1-based line of the problem."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    commands: list[Command] = []
    i = 0
    while i < len(lines):
        raw, lineno = lines[i], i + 1
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        head = _HEAD.match(raw)
        assert head is not None   # the line has a non-space character
        name, rest = head.group(1).lower(), head.group(2) or ""
        if name not in COMMANDS:
            raise InvalidModelfile(_COMMAND_ERROR, lineno)
        key = ""
        if name in ("parameter", "message"):
            keyed = _KEYED.match(rest)
            if keyed is None:
                raise InvalidModelfile(f"{name.upper()} needs a name and a value", lineno)
            key, rest = keyed.group(1), keyed.group(2) or ""
            if name == "message":
                key = key.lower()
                if key not in ROLES:
                    raise InvalidModelfile(
                        'role must be one of "system", "user", or "assistant"', lineno)
        value, i = _value(lines, i, rest, name)
        commands.append(Command(name, value, lineno, key))
    if not any(c.name == "from" for c in commands):
        raise InvalidModelfile("no FROM line")
    return Modelfile(commands)


def _value(lines: list[str], i: int, rest: str, name: str) -> tuple[str, int]:
    """Read the value starting with `rest` on line i; return it and the next line index."""
    lineno = i + 1
    start = rest.lstrip()
    if start.startswith('"""'):
        pieces, current, j = [], start[3:], i
        while True:
            end = current.find('"""')
            if end >= 0:
                pieces.append(current[:end])
                if current[end + 3:].strip():
                    raise InvalidModelfile('unexpected text after closing """', j + 1)
                return "\n".join(pieces), j + 1
            pieces.append(current)
            j += 1
            if j >= len(lines):
                raise InvalidModelfile('unterminated """ (the file ends inside it)', lineno)
            current = lines[j]
    if start.startswith('"'):
        out, k = [], 1
        while k < len(start):
            ch = start[k]
            if ch == "\\" and k + 1 < len(start) and start[k + 1] in '"\\':
                out.append(start[k + 1])
                k += 2
                continue
            if ch == '"':
                if start[k + 1:].strip():
                    raise InvalidModelfile('unexpected text after closing "', lineno)
                return "".join(out), i + 1
            out.append(ch)
            k += 1
        raise InvalidModelfile('unterminated " (quoted values end on their line)', lineno)
    value = start.strip()
    if not value:
        raise InvalidModelfile(f"{name.upper()} needs a value", lineno)
    return value, i + 1


def quote(value: str, always_triple: bool = False) -> str:
    """A value written so that `parse` reads it back unchanged (where that is possible)."""
    if not always_triple and value and "\n" not in value and value == value.strip() \
            and not value.startswith('"'):
        return value
    if not always_triple and "\n" not in value and '"' not in value and "\\" not in value:
        return f'"{value}"'
    return f'"""{value}"""'


def render(*, name: str, model_path: str, adapters: list[str], template: str | None,
           system: str | None, params: dict[str, Any], messages: list[dict[str, Any]],
           licenses: list[str]) -> str:
    """The Modelfile text of /api/show: a header naming the model, then FROM the blob path."""
    out = ['# Modelfile generated by "ollama show"',
           "# To build a new Modelfile based on this, replace FROM with:",
           f"# FROM {name}", "", f"FROM {model_path}"]
    out += [f"ADAPTER {path}" for path in adapters]
    if template:
        out.append(f"TEMPLATE {quote(template, always_triple=True)}")
    for key in sorted(params):
        values = params[key] if isinstance(params[key], list) else [params[key]]
        out += [f"PARAMETER {key} {quote(modelfile_value(v))}" for v in values]
    if system:
        out.append(f"SYSTEM {quote(system, always_triple=True)}")
    for message in messages:
        out.append(f"MESSAGE {message.get('role', '')} {quote(str(message.get('content', '')))}")
    out += [f"LICENSE {quote(text, always_triple=True)}" for text in licenses]
    return "\n".join(out) + "\n"
