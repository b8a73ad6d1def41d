"""Tool calls found in a streamed reply, and the JSON schema of the calls a request allows.

A call is written after one of the template's opening markers (`<tool_call>`,
`[TOOL_CALLS]`, `<|python_tag|>`...) as a JSON object `{"name": ..., "arguments": {...}}` (or
`tool_name`, `parameters`, the arguments as a JSON string, or `{"function": {...}}`), or an
array of them; a template without a marker has the model write the bare JSON as its whole
reply. Only calls of offered tools count. The parser passes ordinary text through at once,
holds back what may be a marker or a call being written, and hands out each call when its
JSON is complete; the markup of a recognised call never reaches the content. Markup that turns
out not to be a call is passed on as text. A prompt that ends inside a call (an assistant
prefill) is continued: the reply completes that call.
"""

from __future__ import annotations

import enum
import json
import secrets
import string
from collections.abc import Mapping, Sequence
from typing import Any

from trio_llm.prompt.template import ToolTags

MAX_CALL_CHARS = 256 * 1024      # a call longer than this is text, not a call
_ARGUMENT_KEYS = ("arguments", "parameters", "tool_arguments")
_ALPHABET = string.ascii_lowercase + string.digits


def call_id() -> str:
    """An id like Ollama's: `call_` and 8 lowercase letters and digits."""
    return "call_" + "".join(secrets.choice(_ALPHABET) for _ in range(8))


def tool_names(tools: Sequence[Mapping[str, Any]]) -> list[str]:
    names = []
    for tool in tools:
        function = tool.get("function")
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            names.append(function["name"])
    return names


def _calls_in(value: Any, names: Sequence[str]) -> list[tuple[str, dict[str, Any]]] | None:
    """The (name, arguments) calls a parsed JSON value describes, or None if it is not a
    list of calls of known tools."""
    items = value if isinstance(value, list) else [value]
    calls = []
    for item in items:
        if not isinstance(item, dict):
            return None
        if isinstance(item.get("function"), dict):
            item = item["function"]
        name = item.get("name", item.get("tool_name"))
        arguments = next((item[key] for key in _ARGUMENT_KEYS if key in item), {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError:
                return None
        if not isinstance(name, str) or name not in names or not isinstance(arguments, dict):
            return None
        calls.append((name, arguments))
    return calls or None


def _json_end(text: str) -> int:
    """Where the JSON object or array that `text` starts with ends (0: not finished)."""
    depth = 0
    in_string = escaped = False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return 0


def _held(text: str, tags: Sequence[str]) -> int:
    """How many characters at the end of `text` could be the start of a tag."""
    keep = 0
    for tag in tags:
        for n in range(min(len(tag) - 1, len(text)), 0, -1):
            if text.endswith(tag[:n]):
                keep = max(keep, n)
                break
    return keep


class _State(enum.Enum):
    SEARCH = "search"        # ordinary text, watching for a marker
    CALL = "call"            # after a marker: a JSON call being written
    AFTER = "after"          # after a call: closing marker, separators, more calls
    TEXT = "text"            # something that was not a call: the rest is text


class ToolCallParser:
    def __init__(self, tags: ToolTags, tools: Sequence[Mapping[str, Any]], prompt: str = ""
                 ) -> None:
        self.tags = tags
        self.names = tool_names(tools)
        self.buffer = ""
        self.marker = ""
        self.index = 0
        self.at_start = True      # nothing visible written yet (bare JSON must start here)
        self.seeded = 0           # characters of the call that the prompt already holds
        self.state = _State.SEARCH
        self._continue_prefill(prompt)

    def _continue_prefill(self, prompt: str) -> None:
        """A prompt that ends inside a call (an assistant prefill such as `<tool_call>` or
        `<tool_call>{"name": "f", "arguments": {"x": "`): the reply continues that call."""
        found = [(prompt.rfind(tag), tag) for tag in self.tags.opening if tag in prompt]
        if not found:
            return
        start, tag = max(found)
        tail = prompt[start + len(tag):].lstrip()
        if tail and (tail[0] not in "{[" or _json_end(tail)):
            return
        self.buffer, self.seeded, self.state = tail, len(tail), _State.CALL

    def feed(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        """(content, completed calls) that can be passed on now."""
        self.buffer += text
        content: list[str] = []
        calls: list[dict[str, Any]] = []
        while self.buffer:
            if self.state is _State.SEARCH:
                if not self._search(content):
                    break
            elif self.state is _State.CALL:
                if not self._call(content, calls):
                    break
            elif self.state is _State.AFTER:
                if not self._after():
                    break
            else:
                content.append(self.buffer)
                self.buffer = ""
        return "".join(content), calls

    def flush(self) -> str:
        """What is left at the end of the reply, as text (an unfinished call included)."""
        rest = (self.marker + self.buffer)[self.seeded:] if self.state is _State.CALL \
            else self.buffer
        self.buffer = self.marker = ""
        self.seeded = 0
        return rest.strip() if self.state is _State.AFTER else rest

    def _search(self, content: list[str]) -> bool:
        if self.tags.bare:
            stripped = self.buffer.lstrip()
            if not stripped:
                return False
            if self.at_start and stripped[0] in "{[":
                self.buffer, self.marker, self.state = stripped, "", _State.CALL
                return True
            self.state = _State.TEXT
            return True
        found = [(self.buffer.find(tag), tag) for tag in self.tags.opening if tag in self.buffer]
        if found:
            start, tag = min(found)
            content.append(self.buffer[:start])
            self.marker, self.buffer = tag, self.buffer[start + len(tag):]
            self.state = _State.CALL
            return True
        keep = _held(self.buffer, self.tags.opening)
        out = self.buffer[:len(self.buffer) - keep]
        if out.strip():
            self.at_start = False
        content.append(out)
        self.buffer = self.buffer[len(self.buffer) - keep:]
        return False

    def _call(self, content: list[str], calls: list[dict[str, Any]]) -> bool:
        stripped = self.buffer.lstrip()
        if not stripped:
            return False
        if stripped[0] not in "{[":
            return self._not_a_call(content)
        end = _json_end(stripped)
        if not end:
            if len(stripped) > MAX_CALL_CHARS:
                return self._not_a_call(content)
            return False
        try:
            found = _calls_in(json.loads(stripped[:end]), self.names)
        except json.JSONDecodeError:
            found = None
        if found is None:
            return self._not_a_call(content)
        for name, arguments in found:
            calls.append({"id": call_id(), "function": {"index": self.index, "name": name,
                                                          "arguments": arguments}})
            self.index += 1
        self.buffer, self.marker, self.seeded = stripped[end:], "", 0
        self.state, self.at_start = _State.AFTER, True
        return True

    def _not_a_call(self, content: list[str]) -> bool:
        content.append((self.marker + self.buffer)[self.seeded:])
        self.buffer = self.marker = ""
        self.seeded = 0
        self.state = _State.TEXT
        return False

    def _after(self) -> bool:
        """Skip white space, separators and the closing marker; then more calls or text."""
        self.buffer = self.buffer.lstrip(" \t\r\n,;")
        closing = self.tags.closing
        if closing:
            if self.buffer.startswith(closing):
                self.buffer = self.buffer[len(closing):]
                return True
            if self.buffer and closing.startswith(self.buffer):
                return False
        if not self.buffer:
            return False
        if self.buffer[0] in "{[":
            self.state = _State.CALL
        else:
            self.state = _State.SEARCH
        return True


# ----------------------------------------------------------------------------- tool_choice

def call_schema(tools: Sequence[Mapping[str, Any]], only: str | None = None
                ) -> dict[str, Any]:
    """The JSON schema of one call of an offered tool (or of the tool `only`):
    `{"name": <its name>, "arguments": <its parameters>}`."""
    choices = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool.get("function"), Mapping) else {}
        assert isinstance(function, Mapping)
        name = function.get("name")
        if not isinstance(name, str) or (only is not None and name != only):
            continue
        parameters = function.get("parameters")
        choices.append({"type": "object",
                        "properties": {"name": {"const": name},
                                       "arguments": dict(parameters) if isinstance(
                                           parameters, Mapping) else {"type": "object"}},
                        "required": ["name", "arguments"]})
    return choices[0] if len(choices) == 1 else {"anyOf": choices}
