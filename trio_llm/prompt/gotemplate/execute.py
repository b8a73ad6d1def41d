"""Go text/template's execution: walking a parsed tree over data, as the package documents it.

Dot starts as the data and `$` names it throughout. `if` and `with` test Go truth (`with` moves
dot to the value); `range` walks a slice in order, a map in key order (one variable gets the
element, two get key and element), an integer n as 0..n-1, and nil as nothing, running `else`
when there was no iteration; `break`/`continue` leave or skip an iteration. A pipeline passes
each command's value as the last argument of the next; `$x := v` declares (until the end of the
enclosing structure), `$x = v` assigns. Fields of structs are their declared fields only; a
missing map key is the zero value (Ollama runs templates with missingkey=zero), printed as
`<no value>`. Output, intermediate strings and iterations are charged to the budget.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from trio_llm.prompt.budget import Budget
from trio_llm.prompt.errors import TemplateFailed, failed_at
from trio_llm.prompt.gotemplate.funcs import FUNCTIONS, FuncError
from trio_llm.prompt.gotemplate.nodes import (
    ActionNode,
    BranchNode,
    ChainNode,
    CommandNode,
    DotNode,
    FieldNode,
    IdentifierNode,
    LiteralNode,
    LoopControlNode,
    NilNode,
    PipeNode,
    TextNode,
    Tree,
    VariableNode,
)
from trio_llm.prompt.gotemplate.values import (
    GoStruct,
    format_value,
    show,
    sorted_keys,
    truth,
    type_name,
)

_MISSING: Any = object()


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _ExecError(Exception):
    def __init__(self, pos: int, message: str) -> None:
        super().__init__(message)
        self.pos = pos
        self.message = message


def execute(tree: Tree, data: Any, budget: Budget, nodes: tuple[Any, ...] | None = None
            ) -> str:
    """Render `nodes` (default: the whole tree) over `data`; TemplateFailed on errors, with
    the line and column of the action that failed."""
    run = _Executor(budget)
    run.variables.append(["$", data])
    try:
        run.walk(tree.nodes if nodes is None else nodes, data)
    except _ExecError as exc:
        raise failed_at(tree.source, exc.pos, exc.message) from None
    except RecursionError:
        raise TemplateFailed("template error: nesting too deep") from None
    return "".join(run.out)


class _Executor:
    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.out: list[str] = []
        self.variables: list[list[Any]] = []

    def write(self, text: str) -> None:
        self.budget.charge(len(text))
        self.out.append(text)

    # -- list level ---------------------------------------------------------------------

    def walk(self, nodes: Iterable[Any], dot: Any) -> None:
        for node in nodes:
            if isinstance(node, TextNode):
                self.write(node.text)
            elif isinstance(node, ActionNode):
                value = self.pipe(dot, node.pipe)
                if not node.pipe.declare:
                    self.write(show(value))
            elif isinstance(node, BranchNode):
                self.branch(node, dot)
            elif isinstance(node, LoopControlNode):
                raise _Break() if node.kind == "break" else _Continue()

    def branch(self, node: BranchNode, dot: Any) -> None:
        mark = len(self.variables)
        try:
            value = self.pipe(dot, node.pipe)
            if node.kind == "range":
                self.range(node, dot, value, mark)
            elif truth(value):
                self.walk(node.body, value if node.kind == "with" else dot)
            elif node.else_body is not None:
                self.walk(node.else_body, dot)
        finally:
            del self.variables[mark:]

    def range(self, node: BranchNode, dot: Any, value: Any, mark: int) -> None:
        pipe = node.pipe
        if value is None:
            items: Iterable[tuple[Any, Any]] = ()
        elif isinstance(value, list | tuple):
            items = enumerate(value)
        elif isinstance(value, Mapping):
            items = ((key, value[key]) for key in sorted_keys(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            if len(pipe.declare) > 1:
                raise _ExecError(pipe.pos, "can't use two variables when ranging over an int")
            items = ((i, i) for i in range(value))
        else:
            raise _ExecError(pipe.pos, f"range can't iterate over {format_value(value)}")
        inner = len(self.variables)
        ran = False
        for key, element in items:
            self.budget.tick()
            ran = True
            self._range_variables(pipe, mark, key, element, node.pos)
            try:
                self.walk(node.body, element)
            except _Break:
                break
            except _Continue:
                pass
            finally:
                del self.variables[inner:]
        if not ran and node.else_body is not None:
            self.walk(node.else_body, dot)

    def _range_variables(self, pipe: PipeNode, mark: int, key: Any, element: Any,
                         pos: int) -> None:
        names = pipe.declare
        if not names:
            return
        values = [element] if len(names) == 1 else [key, element]
        if pipe.assign:
            for name, value in zip(names, values, strict=True):
                self.set_variable(name, value, pos)
        else:
            for offset, value in enumerate(values):
                self.variables[mark + offset][1] = value

    # -- pipelines ----------------------------------------------------------------------

    def pipe(self, dot: Any, pipe: PipeNode) -> Any:
        value = _MISSING
        for command in pipe.commands:
            value = self.command(dot, command, value)
        for name in pipe.declare:
            if pipe.assign:
                self.set_variable(name, value, pipe.pos)
            else:
                self.variables.append([name, value])
        return value

    def command(self, dot: Any, command: CommandNode, final: Any) -> Any:
        first, args = command.args[0], command.args[1:]
        if isinstance(first, FieldNode):
            return self.fields(dot, first.names, args, final, first.pos)
        if isinstance(first, ChainNode):
            receiver = self.argument(dot, first.node)
            return self.fields(receiver, first.names, args, final, first.pos)
        if isinstance(first, VariableNode):
            value = self.lookup(first.name, first.pos)
            if first.names:
                return self.fields(value, first.names, args, final, first.pos)
            self._no_arguments(first.name, args, final, first.pos)
            return value
        if isinstance(first, IdentifierNode):
            return self.call(dot, first, args, final)
        self._no_arguments(_describe(first), args, final, command.pos)
        return self.argument(dot, first)

    def _no_arguments(self, what: str, args: tuple[Any, ...], final: Any, pos: int) -> None:
        if args or final is not _MISSING:
            raise _ExecError(pos, f"can't give argument to non-function {what}")

    def fields(self, receiver: Any, names: tuple[str, ...], args: tuple[Any, ...],
               final: Any, pos: int) -> Any:
        value = receiver
        for i, name in enumerate(names):
            last = i == len(names) - 1
            if last and (args or final is not _MISSING):
                raise _ExecError(pos, f"{name} is not a method but has arguments")
            value = self.field(value, name, pos)
        return value

    def field(self, receiver: Any, name: str, pos: int) -> Any:
        if isinstance(receiver, GoStruct):
            if receiver.has_field(name):
                return getattr(receiver, name)
        elif isinstance(receiver, Mapping):
            return receiver.get(name)
        elif receiver is None:
            raise _ExecError(pos, f"nil pointer evaluating interface {{}}.{name}")
        raise _ExecError(pos, f"can't evaluate field {name} in type {type_name(receiver)}")

    def call(self, dot: Any, ident: IdentifierNode, args: tuple[Any, ...], final: Any) -> Any:
        name = ident.name
        if name in ("and", "or"):
            return self._logic(dot, ident, args, final)
        values = [self.argument(dot, arg) for arg in args]
        if final is not _MISSING:
            values.append(final)
        function = FUNCTIONS[name]
        assert function is not None
        try:
            result = function(self.budget, values)
        except FuncError as exc:
            raise _ExecError(ident.pos, f"error calling {name}: {exc}") from None
        if isinstance(result, str):
            self.budget.charge(len(result))
        return result

    def _logic(self, dot: Any, ident: IdentifierNode, args: tuple[Any, ...], final: Any
               ) -> Any:
        """`and` and `or`: evaluate left to right, stop at the first argument that decides."""
        count = len(args) + (final is not _MISSING)
        if count == 0:
            raise _ExecError(ident.pos, f"wrong number of args for {ident.name}: want at "
                             "least 1 got 0")
        stop_when = ident.name == "or"
        value = None
        for arg in args:
            value = self.argument(dot, arg)
            if truth(value) == stop_when:
                return value
        if final is not _MISSING:
            value = final
        return value

    def argument(self, dot: Any, node: Any) -> Any:
        if isinstance(node, FieldNode):
            return self.fields(dot, node.names, (), _MISSING, node.pos)
        if isinstance(node, VariableNode):
            return self.fields(self.lookup(node.name, node.pos), node.names, (), _MISSING,
                               node.pos)
        if isinstance(node, ChainNode):
            return self.fields(self.argument(dot, node.node), node.names, (), _MISSING,
                               node.pos)
        if isinstance(node, PipeNode):
            return self.pipe(dot, node)
        if isinstance(node, IdentifierNode):
            return self.call(dot, node, (), _MISSING)
        if isinstance(node, LiteralNode):
            return node.value
        if isinstance(node, DotNode):
            return dot
        if isinstance(node, NilNode):
            return None
        raise _ExecError(getattr(node, "pos", 0), "can't evaluate this operand")

    # -- variables ----------------------------------------------------------------------

    def lookup(self, name: str, pos: int) -> Any:
        for entry in reversed(self.variables):
            if entry[0] == name:
                return entry[1]
        raise _ExecError(pos, f"undefined variable: {name}")

    def set_variable(self, name: str, value: Any, pos: int) -> None:
        for entry in reversed(self.variables):
            if entry[0] == name:
                entry[1] = value
                return
        raise _ExecError(pos, f"undefined variable: {name}")


def _describe(node: Any) -> str:
    if isinstance(node, LiteralNode):
        return format_value(node.value)
    if isinstance(node, DotNode):
        return "."
    return "pipeline"
