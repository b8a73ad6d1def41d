"""Jinja chat templates (Hugging Face style), run in Jinja's immutable sandbox under a budget.

Chat templates come from model files and requests, so they are untrusted code: they run in
`ImmutableSandboxedEnvironment` (no attribute escapes, no mutation of what we pass in). On top,
every loop iteration and call ticks the rendering's budget, and every string a template builds
is charged to it: output (literal text and `{{ }}` values), `~`, `+`, `*`, `%` on strings and
lists, filters, string methods (`center`, `ljust`, `join`, `replace`, `format`...), with widths
and repetitions refused before they are built when they cannot fit. Whatever goes wrong inside
one (syntax, `raise_exception`, a blocked attribute, a runtime error) becomes `TemplateFailed`.

The variables are the ones Hugging Face chat templates expect: `messages`,
`add_generation_prompt`, `bos_token`, `eos_token`, `tools`, `raise_exception`,
`strftime_now`, plus `prompt`, `system` and `suffix` for fill-in-the-middle and simple ones.
"""

from __future__ import annotations

import functools
import json
import re
import string
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, NoReturn

import jinja2
from jinja2 import meta, nodes
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from trio_llm.prompt import budget as budgets
from trio_llm.prompt.budget import Budget
from trio_llm.prompt.errors import BudgetExceeded, TemplateFailed

MAX_EXPONENT = 4096
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(\*|\d+)?(?:\.(\*|\d+))?[a-zA-Z%]")
_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})


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


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str | list | tuple | dict) else 0


def _check_percent(text: str) -> None:
    for width, precision in _PERCENT_SPEC.findall(text):
        for part in (width, precision):
            if part == "*":
                raise BudgetExceeded("output", "'*' widths are not allowed")
            if part:
                budgets.current().width(int(part))


def _check_format(text: str) -> None:
    for _, _, spec, _ in string.Formatter().parse(text):
        if spec:
            if "{" in spec:
                raise BudgetExceeded("output", "nested format specifications are not allowed")
            for number in re.findall(r"\d+", spec):
                budgets.current().width(int(number))


class _Counted:
    """An iterable whose iterations tick the budget (its length, when it has one, stays
    known, so `loop.length` does not have to exhaust it)."""

    def __init__(self, iterable: Any) -> None:
        self.iterable = iterable

    def __len__(self) -> int:
        return len(self.iterable)

    def __iter__(self) -> Iterator[Any]:
        budget = budgets.current()
        for item in self.iterable:
            budget.tick()
            yield item


_CONTEXTS = (jinja2.runtime.Context, nodes.EvalContext, jinja2.Environment)


def _charged_filter(name: str, function: Any) -> Any:
    """A filter whose result is charged, with its width-like arguments checked first."""

    @functools.wraps(function)
    def charged(*args: Any, **kwargs: Any) -> Any:
        budget = budgets.current()
        values = [a for a in args if not isinstance(a, _CONTEXTS)]
        if name in ("center", "indent", "wordwrap") and len(values) > 1 \
                and isinstance(values[1], int):
            budget.width(values[1])
        if name == "format" and values and isinstance(values[0], str):
            _check_percent(values[0])
        if name == "join" and values:
            items = [str(x) for x in values[0]] if not isinstance(values[0], str) else values[0]
            sep = values[1] if len(values) > 1 and isinstance(values[1], str) else ""
            budget.allows(sum(map(len, items)) + len(sep) * max(0, len(items) - 1))
        if name == "replace" and len(values) >= 3 and all(isinstance(v, str)
                                                            for v in values[:3]):
            text, old, new = values[:3]
            budget.allows(len(text) + (text.count(old) + (old == "")) * len(new))
        result = function(*args, **kwargs)
        budget.charge(_size(result))
        return result

    return charged


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, charging strings and iterations to the rendering's budget."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = budgets.current()
        if operator == "**":
            if isinstance(right, int) and abs(right) > MAX_EXPONENT:
                raise _TemplateRaised("exponent too large")
            return left ** right
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(count, int):
                    budget.allows(len(seq) * count)
        if operator == "+" and isinstance(left, str | list | tuple) \
                and isinstance(right, str | list | tuple):
            budget.allows(len(left) + len(right))
        if operator == "%" and isinstance(left, str):
            _check_percent(left)
        result = super().call_binop(context, operator, left, right)
        budget.charge(_size(result))
        return result

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        budget = budgets.current()
        budget.tick()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            name = getattr(__obj, "__name__", "")
            if name in _WIDTH_METHODS and args and isinstance(args[0], int):
                budget.width(args[0])
            elif name == "expandtabs":
                budget.allows(len(owner) * (args[0] if args and isinstance(args[0], int)
                                            else 8))
            elif name == "join" and args:
                items = list(args[0])
                budget.allows(sum(_size(x) for x in items) + len(owner) * len(items))
                args = (items, *args[1:])
            elif name == "replace" and len(args) >= 2 and all(isinstance(a, str)
                                                              for a in args[:2]):
                budget.allows(len(owner) + (owner.count(args[0]) + 1) * len(args[1]))
        result = super().call(__context, __obj, *args, **kwargs)
        budget.charge(_size(result))
        return result

    def wrap_str_format(self, value: Any) -> Any:
        """`str.format` as the sandbox wraps it, with its widths checked first."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        text = value.__self__

        def checked(*args: Any, **kwargs: Any) -> str:
            _check_format(text)
            result = wrapped(*args, **kwargs)
            budgets.current().charge(len(result))
            return result

        return functools.update_wrapper(checked, wrapped)

    def budget_iter(self, iterable: Any) -> _Counted:
        return _Counted(iterable)

    def budget_text(self, text: str) -> str:
        budgets.current().charge(len(text))
        return text


def _finalize(value: Any) -> Any:
    """Every `{{ }}` output is charged."""
    if isinstance(value, str):
        budgets.current().charge(len(value))
    return value


@functools.cache
def environment() -> _BoundedEnvironment:
    env = _BoundedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols],
                              autoescape=False, finalize=_finalize)
    env.filters = {name: _charged_filter(name, f) for name, f in env.filters.items()}
    env.filters["tojson"] = _charged_filter("tojson", _tojson)
    env.globals.pop("lipsum", None)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def _instrument(tree: nodes.Template) -> nodes.Template:
    """Charge loops and literal output: every `for` iterates through `budget_iter` (recursive
    loops' `loop(...)` calls too) and every piece of template text through `budget_text`."""
    def attribute(name: str) -> nodes.Expr:
        return nodes.EnvironmentAttribute(name)

    for loop in tree.find_all(nodes.For):
        loop.iter = nodes.Call(attribute("budget_iter"), [loop.iter], [], None, None)
        if loop.recursive:
            for call in loop.find_all(nodes.Call):
                if isinstance(call.node, nodes.Name) and call.node.name == "loop" and call.args:
                    call.args[0] = nodes.Call(attribute("budget_iter"), [call.args[0]], [],
                                              None, None)
    for output in tree.find_all(nodes.Output):
        output.nodes = [nodes.Call(attribute("budget_text"), [nodes.Const(node.data)], [],
                                   None, None) if isinstance(node, nodes.TemplateData)
                        else node for node in output.nodes]
    for concat in list(tree.find_all(nodes.Concat)):
        wrapped = nodes.Concat(concat.nodes)
        concat.nodes = [nodes.Call(attribute("budget_text"), [wrapped], [], None, None)]
    return tree


@functools.lru_cache(maxsize=64)
def compile_template(source: str) -> jinja2.Template:
    """A template compiled with the budget hooks; TemplateFailed naming the line on a
    syntax error."""
    env = environment()
    try:
        tree = _instrument(env.parse(source))
        code = env.compile(tree)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateFailed(f"template error: line {exc.lineno}: {exc.message}") from None
    return env.template_class.from_code(env, code, env.make_globals(None), None)


def check(source: str) -> None:
    """Compile a template, for create-time validation."""
    compile_template(source)


def render(source: str, variables: Mapping[str, Any], budget: Budget) -> str:
    """Render an untrusted template with the given variables under `budget`."""
    template = compile_template(source)
    token = budgets.CURRENT.set(budget)
    try:
        return "".join(template.generate(**variables))
    except TemplateFailed:
        raise
    except _TemplateRaised as exc:
        raise TemplateFailed(f"template error: {exc}") from None
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateFailed(f"template error: unsafe operation: {exc}") from None
    except (jinja2.TemplateError, ArithmeticError, LookupError, TypeError, ValueError,
            AttributeError, RecursionError, OverflowError, MemoryError) as exc:
        raise TemplateFailed(f"template error: {type(exc).__name__}: {exc}") from None
    finally:
        budgets.CURRENT.reset(token)


def variables_used(source: str) -> frozenset[str]:
    """The variables a template reads (for example `tools`, `suffix`)."""
    try:
        return frozenset(meta.find_undeclared_variables(environment().parse(source)))
    except jinja2.TemplateSyntaxError:
        return frozenset()


def names_attribute(source: str, names: frozenset[str]) -> bool:
    """Whether a template reads any of `names` as an attribute or item (`m.reasoning_content`,
    `m['thinking']`)."""
    try:
        tree = environment().parse(source)
    except jinja2.TemplateSyntaxError:
        return False
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        key = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
        if key in names:
            return True
    return False
