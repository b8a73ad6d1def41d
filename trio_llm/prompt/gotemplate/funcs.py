"""The functions a prompt template may call: Go's predefined ones that prompts use (`and`, `or`
are evaluated lazily by the executor) and Ollama's `json`, `currentDate`, `yesterdayDate`,
`toTypeScriptType`.

Each takes the rendering's budget and the evaluated arguments, and raises FuncError with Go's
wording when the arguments do not suit it.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from trio_llm.prompt.budget import Budget
from trio_llm.prompt.gotemplate.values import (
    GoStruct,
    format_float,
    format_value,
    marshal,
    truth,
    type_name,
)


class FuncError(Exception):
    """A function refused its arguments."""


Function = Callable[[Budget, list[Any]], Any]
LAZY = frozenset({"and", "or"})


def _arity(name: str, args: Sequence[Any], want: int) -> None:
    if len(args) != want:
        raise FuncError(f"wrong number of args for {name}: want {want} got {len(args)}")


def _not(budget: Budget, args: list[Any]) -> bool:
    _arity("not", args, 1)
    return not truth(args[0])


def _len(budget: Budget, args: list[Any]) -> int:
    _arity("len", args, 1)
    item = args[0]
    if isinstance(item, str):
        return len(item.encode("utf-8", "surrogatepass"))
    if isinstance(item, bytes | list | tuple | Mapping):
        return len(item)
    raise FuncError(f"len of type {type_name(item)}")


def _int_index(value: Any, length: int, cap: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FuncError(f"cannot index slice/array with type {type_name(value)}")
    if value < 0 or value > (length if cap is None else cap):
        raise FuncError(f"index out of range: {value}")
    return value


def _index(budget: Budget, args: list[Any]) -> Any:
    if not args:
        raise FuncError("wrong number of args for index: want at least 1 got 0")
    item = args[0]
    for key in args[1:]:
        if isinstance(item, Mapping):
            if not isinstance(key, str):
                raise FuncError(f"value has type {type_name(key)}; should be string")
            item = item.get(key)
        elif isinstance(item, str | bytes):
            data = item.encode() if isinstance(item, str) else item
            position = _int_index(key, len(data) - 1)
            item = data[position]
        elif isinstance(item, list | tuple):
            item = item[_int_index(key, len(item) - 1)]
        elif item is None:
            raise FuncError("index of untyped nil")
        else:
            raise FuncError(f"can't index item of type {type_name(item)}")
    return item


def _slice(budget: Budget, args: list[Any]) -> Any:
    if not args:
        raise FuncError("wrong number of args for slice: want at least 1 got 0")
    item, bounds = args[0], args[1:]
    if len(bounds) > 3:
        raise FuncError(f"too many slice indexes: {len(bounds)}")
    if isinstance(item, str):
        if len(bounds) == 3:
            raise FuncError("cannot 3-index slice a string")
        data = item.encode("utf-8", "surrogatepass")
        low, high = _bounds(bounds, len(data))
        return data[low:high].decode("utf-8", "replace")
    if isinstance(item, list | tuple):
        low, high = _bounds(bounds[:2], len(item))
        if len(bounds) == 3:
            _int_index(bounds[2], len(item))
            if bounds[2] < high:
                raise FuncError(f"invalid slice index: {high} > {bounds[2]}")
        budget.charge(high - low)
        return list(item[low:high])
    if item is None:
        raise FuncError("slice of untyped nil")
    raise FuncError(f"can't slice item of type {type_name(item)}")


def _bounds(bounds: Sequence[Any], length: int) -> tuple[int, int]:
    low = _int_index(bounds[0], length) if bounds else 0
    high = _int_index(bounds[1], length) if len(bounds) > 1 else length
    if low > high:
        raise FuncError(f"invalid slice index: {low} > {high}")
    return low, high


def _basic(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, GoStruct):
        return "struct"
    raise FuncError("non-comparable type")


def _equal(a: Any, b: Any) -> bool:
    kind_a, kind_b = _basic(a), _basic(b)
    if "nil" in (kind_a, kind_b):
        return a is None and b is None
    if kind_a != kind_b:
        raise FuncError("incompatible types for comparison")
    return bool(a == b)


def _eq(budget: Budget, args: list[Any]) -> bool:
    if len(args) < 2:
        raise FuncError("missing argument for comparison")
    return any(_equal(args[0], other) for other in args[1:])


def _ne(budget: Budget, args: list[Any]) -> bool:
    _arity("ne", args, 2)
    return not _equal(args[0], args[1])


def _ordered(name: str, args: list[Any]) -> tuple[Any, Any]:
    _arity(name, args, 2)
    a, b = args
    kind_a, kind_b = _basic(a), _basic(b)
    if kind_a not in ("number", "string") or kind_b not in ("number", "string"):
        raise FuncError("invalid type for comparison")
    if kind_a != kind_b:
        raise FuncError("incompatible types for comparison")
    return a, b


def _lt(budget: Budget, args: list[Any]) -> bool:
    a, b = _ordered("lt", args)
    return bool(a < b)


def _le(budget: Budget, args: list[Any]) -> bool:
    a, b = _ordered("le", args)
    return bool(a <= b)


def _gt(budget: Budget, args: list[Any]) -> bool:
    a, b = _ordered("gt", args)
    return bool(a > b)


def _ge(budget: Budget, args: list[Any]) -> bool:
    a, b = _ordered("ge", args)
    return bool(a >= b)


def sprint(args: Sequence[Any]) -> str:
    """fmt.Sprint: spaces between operands when neither side is a string."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(format_value(arg))
    return "".join(out)


def _print(budget: Budget, args: list[Any]) -> str:
    return sprint(args)


def _println(budget: Budget, args: list[Any]) -> str:
    return " ".join(format_value(a) for a in args) + "\n"


_HTML = {"<": "&lt;", ">": "&gt;", "&": "&amp;", "'": "&#39;", '"': "&#34;", "\0": "\ufffd"}


def _html(budget: Budget, args: list[Any]) -> str:
    text = args[0] if len(args) == 1 and isinstance(args[0], str) else sprint(args)
    return "".join(_HTML.get(ch, ch) for ch in text)


def _json(budget: Budget, args: list[Any]) -> str:
    _arity("json", args, 1)
    try:
        return marshal(args[0])
    except ValueError:
        return ""          # Ollama's json ignores marshalling errors


def _today(days_back: int) -> Function:
    def date(budget: Budget, args: list[Any]) -> str:
        day = datetime.date.today() - datetime.timedelta(days=days_back)
        return day.isoformat()
    return date


# ----------------------------------------------------------------------------- printf

_VERB = re.compile(r"%([-+# 0]*)(\*|[0-9]+)?(?:\.(\*|[0-9]*))?(.)", re.DOTALL)


def _printf(budget: Budget, args: list[Any]) -> str:
    if not args or not isinstance(args[0], str):
        raise FuncError("wrong type for value; expected string")
    return sprintf(budget, args[0], list(args[1:]))


def sprintf(budget: Budget, fmt: str, args: list[Any]) -> str:
    """fmt.Sprintf for the verbs prompts use (v s q d t f e g x X o b c U %)."""
    out: list[str] = []
    used = 0
    pos = 0
    while pos < len(fmt):
        start = fmt.find("%", pos)
        if start < 0:
            out.append(fmt[pos:])
            break
        out.append(fmt[pos:start])
        match = _VERB.match(fmt, start)
        if match is None:
            out.append("%!(NOVERB)")
            break
        pos = match.end()
        flags, width_text, precision_text, verb = match.groups()
        if verb == "%":
            out.append("%")
            continue
        width = precision = -1
        if width_text == "*":
            width, used = _star(args, used)
            if width < 0:
                flags, width = flags + "-", -width
        elif width_text:
            width = int(width_text)
        if precision_text == "*":
            precision, used = _star(args, used)
        elif precision_text is not None:
            precision = int(precision_text or 0)
        budget.width(max(width, precision))
        if used >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = args[used]
        used += 1
        out.append(_pad(_verb(verb, flags, precision, arg), width, flags, arg))
    if used < len(args):
        extra = ", ".join(f"{type_name(a)}={format_value(a)}" for a in args[used:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _star(args: list[Any], used: int) -> tuple[int, int]:
    """A `*` width or precision: the next argument, which must be an int."""
    if used >= len(args) or isinstance(args[used], bool) or not isinstance(args[used], int):
        raise FuncError("printf: * width needs an int argument")
    return args[used], used + 1


def _bad(verb: str, arg: Any) -> str:
    return f"%!{verb}({type_name(arg)}={format_value(arg)})"


def quote(text: str) -> str:
    """strconv.Quote."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(ch)])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return "".join(out) + '"'


def _verb(verb: str, flags: str, precision: int, arg: Any) -> str:
    is_int = isinstance(arg, int) and not isinstance(arg, bool)
    if verb == "v":
        return format_value(arg)
    if verb == "s":
        if isinstance(arg, str) or hasattr(arg, "go_string"):
            text = format_value(arg)
            return text[:precision] if precision >= 0 else text
        return _bad(verb, arg)
    if verb == "q":
        if isinstance(arg, str):
            return quote(arg)
        return quote(chr(arg)).replace('"', "'") if is_int else _bad(verb, arg)
    if verb == "t":
        return format_value(arg) if isinstance(arg, bool) else _bad(verb, arg)
    if verb in "dboxXcU" and is_int:
        sign = "-" if arg < 0 else "+" if "+" in flags else " " if " " in flags else ""
        magnitude = abs(arg)
        if verb == "c":
            return chr(arg) if 0 <= arg <= 0x10FFFF else "\ufffd"
        if verb == "U":
            return f"U+{arg:04X}"
        digits = {"d": f"{magnitude}", "b": f"{magnitude:b}", "o": f"{magnitude:o}",
                  "x": f"{magnitude:x}", "X": f"{magnitude:X}"}[verb]
        if "#" in flags and verb in "xXo":
            digits = {"x": "0x", "X": "0X", "o": "0"}[verb] + digits
        return sign + digits
    if verb in "xX" and isinstance(arg, str):
        text = arg.encode().hex()
        return text.upper() if verb == "X" else text
    if verb in "eEfFgG" and isinstance(arg, float):
        kind = verb.lower() if verb != "F" else "f"
        text = format_float(arg, kind, precision if precision >= 0 else
                            (-1 if kind == "g" else 6))
        if "+" in flags and not text.startswith("-"):
            text = "+" + text
        return text.upper() if verb in "EG" else text
    return _bad(verb, arg)


def _pad(text: str, width: int, flags: str, arg: Any) -> str:
    if width <= len(text):
        return text
    fill = width - len(text)
    if "-" in flags:
        return text + " " * fill
    if "0" in flags and isinstance(arg, int | float) and not isinstance(arg, bool):
        sign = text[0] if text[:1] in "+- " else ""
        return sign + "0" * fill + text[len(sign):]
    return " " * fill + text


def _typescript(budget: Budget, args: list[Any]) -> str:
    from trio_llm.prompt.go_values import typescript_type  # the type Ollama's values define
    _arity("toTypeScriptType", args, 1)
    return typescript_type(args[0])


FUNCTIONS: dict[str, Function | None] = {
    "and": None, "or": None, "not": _not, "len": _len, "index": _index, "slice": _slice,
    "eq": _eq, "ne": _ne, "lt": _lt, "le": _le, "gt": _gt, "ge": _ge,
    "print": _print, "println": _println, "printf": _printf, "html": _html, "json": _json,
    "currentDate": _today(0), "yesterdayDate": _today(1), "toTypeScriptType": _typescript,
}
