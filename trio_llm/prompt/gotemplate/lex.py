"""Go text/template's lexical layer: the source split into text and actions, trim markers applied.

Written from the package documentation: actions are delimited by `{{` and `}}`; `{{- ` trims
the white space (space, tab, CR, LF) before the action and ` -}}` the white space after it;
`{{/* ... */}}` is a comment (it may span lines and carry trim markers too); actions may span
lines. Inside an action the tokens are fields (`.Name`), variables (`$`, `$x`), identifiers and
keywords, strings ("..." with Go escapes, `raw`), characters ('a'), numbers, `( ) | , := =`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from trio_llm.prompt.errors import failed_at

SPACE = " \t\r\n"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(
    r"[+-]?(?:0[xX][0-9a-fA-F_]*(?:\.[0-9a-fA-F_]*)?(?:[pP][+-]?[0-9_]+)?"
    r"|0[bB][01_]+|0[oO][0-7_]+"
    r"|(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?(?:[eE][+-]?[0-9_]+)?)i?")
_OCTAL = re.compile(r"[+-]?0[0-7_]+")
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
            "\\": "\\", '"': '"', "'": "'"}


@dataclass(frozen=True)
class Token:
    """One token inside an action; `spaced` says white space came before it."""

    kind: str      # field var ident string char number ( ) | , := = dot
    text: str
    pos: int
    spaced: bool
    value: Any = None


@dataclass(frozen=True)
class Text:
    text: str
    pos: int


@dataclass(frozen=True)
class Action:
    tokens: tuple[Token, ...]
    pos: int       # where its `{{` is


def lex(source: str) -> list[Text | Action]:
    """Text and actions in order, with trim markers applied and comments dropped."""
    items: list[Text | Action] = []
    pos, trim_next = 0, False
    while True:
        start = source.find("{{", pos)
        text = source[pos:] if start < 0 else source[pos:start]
        if trim_next:
            text = text.lstrip(SPACE)
        trim_left = start >= 0 and source.startswith("-", start + 2) \
            and start + 3 < len(source) and source[start + 3] in SPACE
        if trim_left:
            text = text.rstrip(SPACE)
        if text:
            items.append(Text(text, pos))
        if start < 0:
            return items
        inner = start + (4 if trim_left else 2)
        if source.startswith("/*", inner):
            pos, trim_next = _comment(source, start, inner)
            continue
        tokens, pos, trim_next = _action(source, start, inner)
        items.append(Action(tuple(tokens), start))


def _comment(source: str, start: int, inner: int) -> tuple[int, bool]:
    close = source.find("*/", inner + 2)
    if close < 0:
        raise failed_at(source, start, "unclosed comment")
    after = close + 2
    if source.startswith("}}", after):
        return after + 2, False
    if after < len(source) and source[after] in SPACE and source.startswith("-}}", after + 1):
        return after + 4, True
    raise failed_at(source, start, "comment ends before closing delimiter")


def _action(source: str, start: int, pos: int) -> tuple[list[Token], int, bool]:
    """The tokens of the action whose `{{` is at `start`; where it ends; whether it trims."""
    tokens: list[Token] = []
    n = len(source)
    while True:
        spaced_from = pos
        while pos < n and source[pos] in SPACE:
            pos += 1
        spaced = pos > spaced_from or not tokens
        if pos >= n:
            raise failed_at(source, start, "unclosed action")
        if source.startswith("}}", pos):
            return tokens, pos + 2, False
        if spaced and source.startswith("-}}", pos) and pos > spaced_from:
            return tokens, pos + 3, True
        token = _token(source, pos, spaced, start)
        tokens.append(token)
        pos = token.pos + len(token.text)


def _token(source: str, pos: int, spaced: bool, start: int) -> Token:
    c = source[pos]
    nxt = source[pos + 1] if pos + 1 < len(source) else ""
    if c in "()|,=":
        return Token(c, c, pos, spaced)
    if c == ":":
        if nxt != "=":
            raise failed_at(source, pos, "expected :=")
        return Token(":=", ":=", pos, spaced)
    if c == '"':
        return _quoted(source, pos, spaced)
    if c == "`":
        end = source.find("`", pos + 1)
        if end < 0:
            raise failed_at(source, pos, "unterminated raw quoted string")
        text = source[pos:end + 1]
        return Token("string", text, pos, spaced, text[1:-1].replace("\r", ""))
    if c == "'":
        return _char(source, pos, spaced)
    if c == "$":
        match = _IDENT.match(source, pos + 1)
        text = "$" + (match.group() if match else "")
        return Token("var", text, pos, spaced)
    if c == "." and not nxt.isdigit():
        match = _IDENT.match(source, pos + 1)
        if match is None:
            return Token("dot", ".", pos, spaced)
        return Token("field", "." + match.group(), pos, spaced)
    if c.isdigit() or c == "." or (c in "+-" and (nxt.isdigit() or nxt == ".")):
        return _number(source, pos, spaced)
    match = _IDENT.match(source, pos)
    if match is not None:
        return Token("ident", match.group(), pos, spaced)
    raise failed_at(source, pos, f"unrecognized character in action: {c!r}")


def _quoted(source: str, pos: int, spaced: bool) -> Token:
    out: list[str] = []
    i = pos + 1
    while True:
        if i >= len(source) or source[i] == "\n":
            raise failed_at(source, pos, "unterminated quoted string")
        c = source[i]
        if c == '"':
            return Token("string", source[pos:i + 1], pos, spaced, "".join(out))
        if c == "\\":
            value, i = _escape(source, i, '"')
            out.append(value)
            continue
        out.append(c)
        i += 1


def _char(source: str, pos: int, spaced: bool) -> Token:
    i = pos + 1
    if i >= len(source) or source[i] in "\n'":
        raise failed_at(source, pos, "malformed character constant")
    if source[i] == "\\":
        value, i = _escape(source, i, "'")
    else:
        value, i = source[i], i + 1
    if i >= len(source) or source[i] != "'":
        raise failed_at(source, pos, "unterminated character constant")
    return Token("char", source[pos:i + 1], pos, spaced, ord(value))


def _escape(source: str, i: int, quote: str) -> tuple[str, int]:
    """The character a backslash escape at `i` stands for, and where the escape ends."""
    kind = source[i + 1] if i + 1 < len(source) else ""
    if kind in _ESCAPES and (kind not in "'\"" or kind == quote):
        return _ESCAPES[kind], i + 2
    digits = {"x": 2, "u": 4, "U": 8}.get(kind)
    if digits is not None:
        code = source[i + 2:i + 2 + digits]
        if len(code) == digits and all(ch in "0123456789abcdefABCDEF" for ch in code):
            value = int(code, 16)
            if value <= 0x10FFFF:
                return chr(value), i + 2 + digits
    elif kind in "01234567" and kind:
        code = source[i + 1:i + 4]
        if len(code) == 3 and all(ch in "01234567" for ch in code) and int(code, 8) < 256:
            return chr(int(code, 8)), i + 4
    raise failed_at(source, i, "invalid escape sequence in quoted string")


def _number(source: str, pos: int, spaced: bool) -> Token:
    match = _NUMBER.match(source, pos)
    text = match.group() if match else ""
    end = pos + len(text)
    if not text or text in "+-." or (end < len(source) and (source[end].isalnum()
                                                            or source[end] == "_")):
        raise failed_at(source, pos, f"bad number syntax: {source[pos:end + 1]!r}")
    return Token("number", text, pos, spaced, number_value(source, pos, text))


def number_value(source: str, pos: int, text: str) -> int | float:
    """A Go number literal's value: an int (decimal, 0x, 0o, 0b or leading-0 octal) or a
    float (decimal or hexadecimal)."""
    if text.endswith("i"):
        raise failed_at(source, pos, "complex numbers are not supported")
    plain = text.replace("_", "")
    try:
        if _OCTAL.fullmatch(plain):
            return int(plain, 8)
        if plain.lstrip("+-")[:2].lower() in ("0x", "0o", "0b") and not (
                plain.lstrip("+-")[:2].lower() == "0x" and any(c in plain for c in ".pP")):
            return int(plain, 0)
        if plain.lstrip("+-")[:2].lower() == "0x":
            return float.fromhex(plain)
        if any(c in plain for c in ".eE"):
            return float(plain)
        return int(plain, 10)
    except ValueError:
        raise failed_at(source, pos, f"bad number syntax: {text!r}") from None
