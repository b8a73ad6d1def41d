"""Go values as the interpreter sees them, and how Go prints and marshals them.

Python stands in for Go's kinds: None is nil, bool, int, float (float64), str, list/tuple
(slices), dict with string keys (maps: ranged, printed and marshalled in key order), and
`GoStruct` for structs, whose declared fields are the only names a template can reach. A value
with a `go_string()` method is a fmt.Stringer. Printing follows fmt's `%v`; `marshal` follows
encoding/json (HTML-safe escapes, sorted map keys, struct fields in order with omitempty).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import fields
from decimal import Decimal
from typing import Any, ClassVar


class GoStruct:
    """A Go struct: a frozen dataclass whose field names are the Go field names.

    `json_names` maps a field to its JSON key and whether it is omitempty (no entry: the Go
    field name, always present). `go_type` names the type in error messages; `pointer` marks
    values the template reaches through a pointer (printed with `&`)."""

    go_type: ClassVar[str] = "struct"
    pointer: ClassVar[bool] = False
    json_names: ClassVar[Mapping[str, tuple[str, bool]]] = {}

    def go_fields(self) -> list[tuple[str, Any]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self)]  # type: ignore[arg-type]

    def has_field(self, name: str) -> bool:
        return name in self.__dataclass_fields__  # type: ignore[attr-defined]


def type_name(value: Any) -> str:
    """The Go type of a value, for error messages."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes):
        return "[]uint8"
    if isinstance(value, GoStruct):
        return ("*" if value.pointer else "") + value.go_type
    if isinstance(value, Mapping):
        return getattr(value, "go_type", "map[string]interface {}")
    if isinstance(value, list | tuple):
        return getattr(value, "go_type", "[]interface {}")
    return type(value).__name__


def truth(value: Any) -> bool:
    """Go template truth: false, 0, nil and empty strings, slices and maps are false;
    structs are true."""
    if value is None:
        return False
    if isinstance(value, GoStruct):
        return True
    if isinstance(value, bool | int | float):
        return value != 0
    return len(value) > 0


# ----------------------------------------------------------------------------- printing

def show(value: Any) -> str:
    """What `{{ pipeline }}` prints: nil (a missing map key too) is `<no value>`."""
    return "<no value>" if value is None else format_value(value)


def format_value(value: Any) -> str:
    """fmt's `%v`."""
    if value is None:
        return "<nil>"
    stringer = getattr(value, "go_string", None)
    if stringer is not None:
        return str(stringer())
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float(value, "g", -1)
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return "[" + " ".join(str(b) for b in value) + "]"
    if isinstance(value, GoStruct):
        inner = " ".join(format_value(v) for _, v in value.go_fields())
        return ("&" if value.pointer else "") + "{" + inner + "}"
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{format_value(k)}:{format_value(value[k])}"
                                 for k in sorted_keys(value)) + "]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(format_value(v) for v in value) + "]"
    return str(value)


def sorted_keys(mapping: Mapping[Any, Any]) -> list[Any]:
    """Map keys in the order Go ranges and prints them (sorted)."""
    try:
        return sorted(mapping)
    except TypeError:
        return sorted(mapping, key=str)


def _digits(value: float) -> tuple[str, int]:
    """The shortest decimal digits that round-trip `abs(value)` and where the decimal point
    goes: abs(value) = 0.DIGITS x 10**point."""
    _, digits, exponent = Decimal(repr(abs(value))).as_tuple()
    significant = "".join(map(str, digits)).lstrip("0")
    if not significant:
        return "0", 1
    return significant.rstrip("0"), len(significant) + int(exponent)


def format_float(value: float, verb: str, precision: int) -> str:
    """strconv.FormatFloat for 'e', 'f' and 'g' (precision -1: the shortest exact digits)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if precision >= 0:
        if verb == "g":
            text = f"{abs(value):.{max(precision, 1)}g}"
            if "e" in text:
                mantissa, exp = text.split("e")
                text = f"{mantissa}e{int(exp):+03d}"
            return sign + text
        text = f"{abs(value):.{precision}{verb}}"
        if verb == "e":
            mantissa, exp = text.split("e")
            text = f"{mantissa}e{int(exp):+03d}"
        return sign + text
    digits, point = _digits(value)
    if digits == "0":
        return sign + ("0e+00" if verb == "e" else "0")
    exponent = point - 1
    if verb == "e" or (verb == "g" and (exponent < -4 or exponent >= 6)):
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{exponent:+03d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


# ----------------------------------------------------------------------------- JSON

_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                 "\b": "\\b", "\f": "\\f", "<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                 "\u2028": "\\u2028", "\u2029": "\\u2029"}


def json_string(text: str) -> str:
    out = ['"']
    for ch in text:
        escaped = _JSON_ESCAPES.get(ch)
        if escaped is not None:
            out.append(escaped)
        elif ch < " ":
            out.append(f"\\u{ord(ch):04x}")
        elif "\ud800" <= ch <= "\udfff":
            out.append("\\ufffd")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def json_float(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError(f"json: unsupported value: {format_float(value, 'g', -1)}")
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        text = format_float(value, "e", -1)
        mantissa, exp = text.split("e")
        return f"{mantissa}e{exp[0]}{int(exp[1:])}"
    return format_float(value, "f", -1)


def marshal(value: Any) -> str:
    """encoding/json's Marshal."""
    custom = getattr(value, "go_json", None)
    if custom is not None:
        return str(custom())
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return json_float(value)
    if isinstance(value, str):
        return json_string(value)
    if isinstance(value, bytes):
        return json_string(base64.b64encode(value).decode())
    if isinstance(value, GoStruct):
        parts = []
        for name, item in value.go_fields():
            key, omitempty = value.json_names.get(name, (name, False))
            if omitempty and _empty(item):
                continue
            parts.append(f"{json_string(key)}:{marshal(item)}")
        return "{" + ",".join(parts) + "}"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{json_string(str(k))}:{marshal(value[k])}"
                              for k in sorted_keys(value)) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(marshal(v) for v in value) + "]"
    raise ValueError(f"json: unsupported type: {type_name(value)}")


def _empty(value: Any) -> bool:
    """Go's omitempty: false, 0, "", nil, and empty slices and maps."""
    if value is None:
        return True
    if isinstance(value, GoStruct):
        return False
    if isinstance(value, bool | int | float):
        return value == 0
    return len(value) == 0
