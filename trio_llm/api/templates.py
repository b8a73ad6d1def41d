"""Prompt rendering: a model's Jinja chat template, run in Jinja's immutable sandbox.

Chat templates come from model files and requests, so they are untrusted code: they run in
`ImmutableSandboxedEnvironment` (no attribute escapes, no mutation of what we pass in, bounded
`range`). Whatever goes wrong inside one (syntax, `raise_exception`, a blocked attribute, a
runtime error) becomes `TemplateFailed`, a 400 with the reason.

The variables are the ones Hugging Face chat templates expect: `messages`, `add_generation_prompt`,
`bos_token`, `eos_token`, `tools`, `raise_exception`, `strftime_now`, plus `prompt`, `system`
and `suffix` for fill-in-the-middle and simple templates.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NoReturn

import jinja2
from jinja2 import meta
from jinja2.ext import loopcontrols
from jinja2.sandbox import MAX_RANGE, ImmutableSandboxedEnvironment

from trio_llm.errors import BadRequest

MAX_OUTPUT_CHARS = 16 * 1024 * 1024  # a template may not produce more text than this
MAX_RANGE_ITEMS = 1_000_000  # all range() calls of one rendering together
MAX_EXPONENT = 4096


class TemplateFailed(BadRequest):
    """A template that cannot be compiled or fails while rendering."""


class _TemplateRaised(Exception):
    """What `raise_exception(...)` inside a template raises."""


def _raise_exception(message: str) -> NoReturn:
    raise _TemplateRaised(str(message))


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False,
            sort_keys: bool = False, separators: Any = None) -> str:
    """HF's `tojson`: plain json.dumps (Jinja's own escapes HTML, which prompts must not)."""
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys,
                      separators=separators)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, plus bounds on `*` and `**` so a template cannot exhaust memory
    or CPU with one expression ('x' * 10**12, 10 ** 10**8)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, int) and abs(right) > MAX_EXPONENT:
                raise _TemplateRaised("exponent too large")
            return left ** right
        for seq, count in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(count, int):
                if len(seq) * count > MAX_OUTPUT_CHARS:
                    raise _TemplateRaised("repetition too large")
        return left * right


def _bounded_range() -> Any:
    """A `range` for one rendering: at most MAX_RANGE items per call, MAX_RANGE_ITEMS in all,
    so nested loops cannot spin for minutes."""
    used = 0

    def bounded(*args: int) -> range:
        nonlocal used
        items = range(*args)
        if len(items) > MAX_RANGE:
            raise _TemplateRaised(f"range too big (at most {MAX_RANGE} items)")
        used += len(items)
        if used > MAX_RANGE_ITEMS:
            raise _TemplateRaised("too many loop iterations")
        return items

    return bounded


@functools.cache
def _environment() -> ImmutableSandboxedEnvironment:
    env = _BoundedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols], autoescape=False)
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@functools.lru_cache(maxsize=64)
def _compile(source: str) -> jinja2.Template:
    try:
        return _environment().from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateFailed(f"template error: {exc.message} (line {exc.lineno})") from None


def render(source: str, variables: Mapping[str, Any]) -> str:
    """Render an untrusted template with the given variables; TemplateFailed on any failure."""
    template = _compile(source)
    try:
        pieces: list[str] = []
        size = 0
        for piece in template.generate(**{"range": _bounded_range(), **variables}):
            size += len(piece)
            if size > MAX_OUTPUT_CHARS:
                raise TemplateFailed("template error: output too long")
            pieces.append(piece)
        return "".join(pieces)
    except TemplateFailed:
        raise
    except _TemplateRaised as exc:
        raise TemplateFailed(f"template error: {exc}") from None
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateFailed(f"template error: unsafe operation: {exc}") from None
    except (jinja2.TemplateError, ArithmeticError, LookupError, TypeError, ValueError,
            AttributeError, RecursionError, OverflowError) as exc:
        raise TemplateFailed(f"template error: {type(exc).__name__}: {exc}") from None


def render_chat(template: str, messages: Sequence[Mapping[str, Any]], *,
                add_generation_prompt: bool = True, bos_token: str = "", eos_token: str = "",
                tools: Sequence[Mapping[str, Any]] | None = None,
                **extra: Any) -> str:
    """The prompt for a conversation. Without a template: the contents joined by blank lines
    (a base model then simply continues the text)."""
    if not template:
        return "\n\n".join(str(m.get("content") or "") for m in messages)
    variables = {"messages": [dict(m) for m in messages],
                 "add_generation_prompt": add_generation_prompt,
                 "bos_token": bos_token, "eos_token": eos_token,
                 "tools": list(tools) if tools else None, **extra}
    return render(template, variables)


def render_generate(template: str, prompt: str, *, system: str = "", suffix: str = "",
                    messages: Sequence[Mapping[str, Any]] = (), bos_token: str = "",
                    eos_token: str = "") -> str:
    """The prompt for /api/generate: the chat template with one user message (after `system`
    and any Modelfile messages). Without a template: the prompt, with `system` prepended."""
    if not template:
        return f"{system}\n\n{prompt}" if system else prompt
    turns: list[Mapping[str, Any]] = []
    if system:
        turns.append({"role": "system", "content": system})
    turns.extend(messages)
    turns.append({"role": "user", "content": prompt})
    return render_chat(template, turns, bos_token=bos_token, eos_token=eos_token,
                       prompt=prompt, system=system, suffix=suffix)


def uses_variable(template: str, name: str) -> bool:
    """Whether a template refers to a variable (for example `suffix`, to allow insert)."""
    try:
        return name in meta.find_undeclared_variables(_environment().parse(template))
    except jinja2.TemplateSyntaxError:
        return False


# ----------------------------------------------------------------------------- Go templates

_GO_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.DOTALL)
_GO_MARK = re.compile(r"\{\{-?\s*(?:\.[A-Z]|if\s+\.|range\s|end\s*-?\}\}|else\s*-?\}\})")
_GO_VARIABLES = {".System": "system", ".Prompt": "prompt", ".Suffix": "suffix"}


def is_go_template(source: str) -> bool:
    """Whether a template is written in Go's text/template (Ollama's TEMPLATE) syntax."""
    return _GO_MARK.search(source) is not None


def _literal(text: str) -> str:
    return f"{{% raw %}}{text}{{% endraw %}}" if "{" in text or "}" in text else text


def go_to_jinja(source: str) -> str:
    """Translate Ollama's simple legacy templates to Jinja: `{{ .System }}`, `{{ .Prompt }}`,
    `{{ .Suffix }}`, `{{ if .X }}`, `{{ else }}`, `{{ end }}`, with `{{-`/`-}}` trimming.
    Generation continues where `{{ .Response }}` stands, so the rest is cut. Anything richer
    (`range .Messages`, functions) is refused: such models should use their Jinja template.
    Block tags carry `+` so the Jinja environment's whitespace trimming leaves text as is."""
    out: list[str] = []
    position = 0
    open_ifs = 0
    trim_next = False
    for action in _GO_ACTION.finditer(source):
        text = source[position:action.start()]
        if trim_next:
            text = text.lstrip()
        if action.group(1):
            text = text.rstrip()
        out.append(_literal(text))
        trim_next = bool(action.group(3))
        position = action.end()
        body = action.group(2)
        if body == ".Response":
            position = len(source)
            break
        if body in _GO_VARIABLES:
            out.append("{{ " + _GO_VARIABLES[body] + " }}")
        elif body.startswith("if ") and body[3:].strip() in _GO_VARIABLES:
            out.append("{%+ if " + _GO_VARIABLES[body[3:].strip()] + " +%}")
            open_ifs += 1
        elif body == "else" and open_ifs:
            out.append("{%+ else +%}")
        elif body == "end" and open_ifs:
            out.append("{%+ endif +%}")
            open_ifs -= 1
        else:
            raise TemplateFailed(f"template error: unsupported Go template action "
                                 f"{{{{ {body} }}}}; use a Jinja template")
    rest = source[position:]
    out.append(_literal(rest.lstrip() if trim_next else rest))
    out.append("{%+ endif +%}" * open_ifs)
    return "".join(out)


def as_jinja(source: str) -> str:
    """The template as Jinja, translating a simple Go template when given one."""
    return go_to_jinja(source) if source and is_go_template(source) else source
