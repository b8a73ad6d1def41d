"""The values Ollama hands a Go template, as Go structs: messages, tool calls and tools.

Field names are the ones Ollama documents for templates (`.Role .Content .Thinking .ToolCalls
.ToolName .ToolCallID`, `.Function.Name .Function.Arguments`, `.Type .Function.Name
.Description .Parameters`, with `.Properties` a map of `.Type .Description .Enum ...`). Tools,
a tool, a function and call arguments print as their JSON (fmt.Stringer), so
`{{ .Function }}` and `{{ .Function.Arguments }}` write JSON as library templates expect; JSON
keys of maps are sorted, struct fields keep their order, as Go marshals them. Anything a client
sends beyond these fields is not reachable from a template (Go would drop it when decoding).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from trio_llm.prompt.gotemplate.values import GoStruct, marshal


class Arguments(dict[str, Any]):
    """A tool call's arguments (a Go map): prints as its JSON."""

    go_type = "map[string]interface {}"

    def go_string(self) -> str:
        return marshal(dict(self))


class PropertyType(list[str]):
    """A property's type: one name (marshalled as a string) or several (as an array)."""

    go_type = "api.PropertyType"

    def go_string(self) -> str:
        if not self:
            return ""
        return self[0] if len(self) == 1 else "[" + " ".join(self) + "]"

    def go_json(self) -> str:
        return marshal(self[0]) if len(self) == 1 else marshal(list(self))


class Properties(dict[str, Any]):
    go_type = "map[string]api.ToolProperty"

    def go_string(self) -> str:
        return marshal(dict(self))


class Tools(list[Any]):
    go_type = "[]api.Tool"

    def go_string(self) -> str:
        return marshal(list(self))


@dataclass(frozen=True)
class ToolProperty(GoStruct):
    go_type: ClassVar[str] = "api.ToolProperty"
    json_names: ClassVar[Mapping[str, tuple[str, bool]]] = {
        "AnyOf": ("anyOf", True), "Type": ("type", True), "Items": ("items", True),
        "Description": ("description", True), "Enum": ("enum", True),
        "Properties": ("properties", True), "Required": ("required", True)}
    AnyOf: list[ToolProperty] = field(default_factory=list)
    Type: PropertyType = field(default_factory=PropertyType)
    Items: Any = None
    Description: str = ""
    Enum: list[Any] = field(default_factory=list)
    Properties: Properties | None = None
    Required: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ToolFunctionParameters(GoStruct):
    go_type: ClassVar[str] = "api.ToolFunctionParameters"
    json_names: ClassVar[Mapping[str, tuple[str, bool]]] = {
        "Type": ("type", False), "Defs": ("$defs", True), "Items": ("items", True),
        "Required": ("required", True), "Properties": ("properties", False)}
    Type: str = ""
    Defs: Any = None
    Items: Any = None
    Required: list[str] = field(default_factory=list)
    Properties: Properties | None = None

    def go_string(self) -> str:
        return marshal(self)


@dataclass(frozen=True)
class ToolFunction(GoStruct):
    go_type: ClassVar[str] = "api.ToolFunction"
    json_names: ClassVar[Mapping[str, tuple[str, bool]]] = {
        "Name": ("name", False), "Description": ("description", False),
        "Parameters": ("parameters", False)}
    Name: str = ""
    Description: str = ""
    Parameters: ToolFunctionParameters = field(default_factory=ToolFunctionParameters)

    def go_string(self) -> str:
        return marshal(self)


@dataclass(frozen=True)
class Tool(GoStruct):
    go_type: ClassVar[str] = "api.Tool"
    json_names: ClassVar[Mapping[str, tuple[str, bool]]] = {
        "Type": ("type", False), "Items": ("items", True), "Function": ("function", False)}
    Type: str = ""
    Items: Any = None
    Function: ToolFunction = field(default_factory=ToolFunction)

    def go_string(self) -> str:
        return marshal(self)


@dataclass(frozen=True)
class ToolCallFunction(GoStruct):
    go_type: ClassVar[str] = "api.ToolCallFunction"
    Index: int = 0
    Name: str = ""
    Arguments: Arguments = field(default_factory=Arguments)


@dataclass(frozen=True)
class ToolCall(GoStruct):
    go_type: ClassVar[str] = "api.ToolCall"
    ID: str = ""
    Function: ToolCallFunction = field(default_factory=ToolCallFunction)


@dataclass(frozen=True)
class Message(GoStruct):
    go_type: ClassVar[str] = "api.Message"
    pointer: ClassVar[bool] = True
    Role: str = ""
    Content: str = ""
    Thinking: str = ""
    Images: list[bytes] = field(default_factory=list)
    ToolCalls: list[ToolCall] = field(default_factory=list)
    ToolName: str = ""
    ToolCallID: str = ""


_TYPESCRIPT = {"string": "string", "number": "number", "integer": "number",
               "boolean": "boolean", "array": "any[]", "object": "Record<string, any>",
               "null": "null"}


def typescript_type(value: Any) -> str:
    """Ollama's `toTypeScriptType`: a tool property's type as TypeScript writes it."""
    if not isinstance(value, ToolProperty):
        return "any"
    if value.AnyOf:
        return " | ".join(typescript_type(p) for p in value.AnyOf)
    if not value.Type:
        return "any"
    return " | ".join(_TYPESCRIPT.get(t, "any") for t in value.Type)


# ----------------------------------------------------------------------------- from JSON

def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _property(raw: Any) -> ToolProperty:
    raw = raw if isinstance(raw, Mapping) else {}
    kind = raw.get("type")
    types = PropertyType([kind] if isinstance(kind, str) else _strings(kind))
    nested = raw.get("properties")
    return ToolProperty(
        AnyOf=[_property(x) for x in raw.get("anyOf") or [] if isinstance(x, Mapping)],
        Type=types, Items=raw.get("items"), Description=_text(raw.get("description")),
        Enum=list(raw.get("enum") or []) if isinstance(raw.get("enum"), list) else [],
        Properties=_properties(nested) if isinstance(nested, Mapping) else None,
        Required=_strings(raw.get("required")))


def _properties(raw: Mapping[str, Any]) -> Properties:
    return Properties({str(k): _property(v) for k, v in raw.items()})


def tool(raw: Mapping[str, Any]) -> Tool:
    """A tool as the client sent it ({type, function: {name, description, parameters}})."""
    function = raw.get("function") if isinstance(raw.get("function"), Mapping) else {}
    assert isinstance(function, Mapping)
    parameters = function.get("parameters") if isinstance(function.get("parameters"),
                                                          Mapping) else {}
    assert isinstance(parameters, Mapping)
    props = parameters.get("properties")
    return Tool(Type=_text(raw.get("type")), Items=raw.get("items"), Function=ToolFunction(
        Name=_text(function.get("name")), Description=_text(function.get("description")),
        Parameters=ToolFunctionParameters(
            Type=_text(parameters.get("type")), Defs=parameters.get("$defs"),
            Items=parameters.get("items"), Required=_strings(parameters.get("required")),
            Properties=_properties(props) if isinstance(props, Mapping) else None)))


def tools(raw: Sequence[Mapping[str, Any]] | None) -> Tools | None:
    return None if not raw else Tools(tool(t) for t in raw)


def tool_call(raw: Mapping[str, Any], index: int) -> ToolCall:
    function = raw.get("function") if isinstance(raw.get("function"), Mapping) else {}
    assert isinstance(function, Mapping)
    arguments = function.get("arguments")
    position = function.get("index")
    return ToolCall(ID=_text(raw.get("id")), Function=ToolCallFunction(
        Index=position if isinstance(position, int) else index,
        Name=_text(function.get("name")),
        Arguments=Arguments(arguments if isinstance(arguments, Mapping) else {})))


def message(raw: Mapping[str, Any]) -> Message:
    """A chat message ({role, content, thinking?, tool_calls?, tool_name?, tool_call_id?})."""
    calls = raw.get("tool_calls") or []
    return Message(
        Role=_text(raw.get("role")), Content=_text(raw.get("content")),
        Thinking=_text(raw.get("thinking")),
        Images=[i for i in raw.get("images") or [] if isinstance(i, bytes)],
        ToolCalls=[tool_call(c, i) for i, c in enumerate(calls) if isinstance(c, Mapping)],
        ToolName=_text(raw.get("tool_name")), ToolCallID=_text(raw.get("tool_call_id")))
