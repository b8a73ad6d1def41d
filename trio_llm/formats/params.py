"""Model parameters (Modelfile PARAMETER / `parameters` in /api/create): names, types, display.

The store only needs each option's name and type (trio_llm.options, the one table), to reject
unknown names and to turn the Modelfile's strings into the JSON values of the params layer.
Display follows Go: `show` prints `%-30s %#v` per value, and Go prints float64 with `%v`
(4096, 0.7, 1e-05, 1e+06).
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from typing import Any

from trio_llm.errors import InvalidParameter
from trio_llm.options import OPTIONS, Kind

INT, FLOAT, BOOL, STRINGS = (k.value for k in (Kind.INT, Kind.FLOAT, Kind.BOOL, Kind.STRINGS))

# Every PARAMETER name and its type, from the one option table.
PARAMETER_TYPES: dict[str, str] = {o.name: o.kind.value for o in OPTIONS.values()
                                   if o.in_modelfiles}

_INT = re.compile(r"[+-]?\d+\Z")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z")
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def _kind(name: str) -> str:
    kind = PARAMETER_TYPES.get(name)
    if kind is None:
        raise InvalidParameter(f"unknown parameter '{name}'")
    return kind


def parse_value(name: str, text: str) -> Any:
    """One Modelfile PARAMETER value (a string) as the JSON value its option takes."""
    kind = _kind(name)
    text = text.strip() if kind != STRINGS else text
    if kind == INT and _INT.match(text):
        return int(text)
    if kind == FLOAT and _FLOAT.match(text):
        return float(text)
    if kind == BOOL and (text in _TRUE or text in _FALSE):
        return text in _TRUE
    if kind == STRINGS:
        return text
    raise InvalidParameter(f"invalid {kind} value {text!r} for parameter '{name}'")


def from_modelfile(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """PARAMETER lines to a params object; repeated `stop` lines accumulate into a list."""
    params: dict[str, Any] = {}
    for name, text in pairs:
        value = parse_value(name, text)
        if PARAMETER_TYPES[name] == STRINGS:
            params.setdefault(name, []).append(value)
        else:
            params[name] = value
    return params


def check(params: Any) -> dict[str, Any]:
    """Validate the JSON form's `parameters` object, coercing what Go would accept."""
    if not isinstance(params, dict):
        raise InvalidParameter("parameters must be an object")
    out: dict[str, Any] = {}
    for name, value in params.items():
        kind = _kind(str(name))
        if isinstance(value, str) and kind != STRINGS:
            out[name] = parse_value(name, value)
        elif kind == STRINGS:
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
                raise InvalidParameter(f"parameter '{name}' must be a list of strings")
            out[name] = list(items)
        elif kind == BOOL and isinstance(value, bool):
            out[name] = value
        elif kind in (INT, FLOAT) and isinstance(value, int | float) and not isinstance(
                value, bool) and math.isfinite(value):
            if kind == INT:
                if value != int(value):
                    raise InvalidParameter(f"parameter '{name}' must be an integer")
                value = int(value)
            out[name] = value
        else:
            raise InvalidParameter(f"invalid {kind} value {value!r} for parameter '{name}'")
    return out


def merge(inherited: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A derived model's params: the base's, with each newly given option replacing (not
    extending) the inherited one."""
    merged = dict(inherited)
    merged.update(new)
    return merged


def go_float(x: float) -> str:
    """A number as Go's `%v` prints a float64: shortest digits, exponent below 1e-4 or from 1e6."""
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if x == 0:
        return "-0" if math.copysign(1, x) < 0 else "0"
    sign = "-" if x < 0 else ""
    dec = Decimal(repr(abs(x))).normalize()
    _, digit_tuple, exponent = dec.as_tuple()
    digits = "".join(map(str, digit_tuple))
    point = len(digits) + int(exponent)      # digits before the decimal point
    exp10 = point - 1
    if exp10 < -4 or exp10 >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def go_value(value: Any) -> str:
    """A JSON value as Go's `%#v` prints what encoding/json decoded it into."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return go_float(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def show_text(params: dict[str, Any]) -> str:
    """The `parameters` text of /api/show: one `name value` line per value, list items apart."""
    lines = []
    for name in sorted(params):
        values = params[name] if isinstance(params[name], list) else [params[name]]
        lines.extend(f"{name:<30} {go_value(v)}" for v in values)
    return "\n".join(lines)


def modelfile_value(value: Any) -> str:
    """A value as PARAMETER writes it: numbers and bools bare, strings bare when that is safe."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return go_float(value)
    return str(value)
