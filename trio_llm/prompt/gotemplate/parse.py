"""Go text/template's parser: lexed items into a tree, with the checks Go makes at parse time.

Those checks: every `if`/`range`/`with` has its `{{end}}`; `else` and `end` appear only where a
structure is open (`else if` inside `if`, `else with` inside `with`); `break`/`continue` only in
a range body; a variable is used only after its declaration, in its scope (a variable declared
inside a control structure lives until that structure's `end`); functions are known; only the
first command of a pipeline may be a constant; operands are separated by spaces.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from trio_llm.prompt.errors import TemplateFailed, failed_at
from trio_llm.prompt.gotemplate.lex import Action, Text, Token, lex
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

KEYWORDS = frozenset({"if", "else", "end", "range", "with", "define", "template", "block",
                      "break", "continue"})
MAX_DEPTH = 100      # nested structures and parentheses


class _Tokens:
    """The tokens of one action, read left to right."""

    def __init__(self, tokens: tuple[Token, ...], end: int) -> None:
        self.tokens = tokens
        self.i = 0
        self.end = end

    def peek(self, ahead: int = 0) -> Token | None:
        j = self.i + ahead
        return self.tokens[j] if j < len(self.tokens) else None

    def next(self) -> Token | None:
        token = self.peek()
        self.i += 1
        return token

    @property
    def pos(self) -> int:
        """Where the next token is (past the end: where the last one was)."""
        token = self.peek()
        if token is not None:
            return token.pos
        return self.tokens[-1].pos if self.tokens else self.end


def parse(source: str, functions: Collection[str]) -> Tree:
    """Parse a template; TemplateFailed with the line and column of the first problem."""
    parser = _Parser(source, lex(source), functions)
    nodes, stop = parser.parse_list()
    if stop is not None:
        raise parser.fail(stop.pos, f"unexpected {{{{{_keyword(stop)}}}}}")
    return Tree(source, tuple(nodes), frozenset(parser.fields))


def _keyword(item: Action) -> str | None:
    first = item.tokens[0] if item.tokens else None
    if first is not None and first.kind == "ident" and first.text in KEYWORDS:
        return first.text
    return None


class _Parser:
    def __init__(self, source: str, items: list[Text | Action], functions: Collection[str]
                 ) -> None:
        self.source = source
        self.items = items
        self.i = 0
        self.functions = functions
        self.variables = ["$"]
        self.range_depth = 0
        self.depth = 0
        self.fields: set[str] = set()

    def fail(self, pos: int, message: str) -> TemplateFailed:
        return failed_at(self.source, pos, message)

    # -- list level ---------------------------------------------------------------------

    def parse_list(self) -> tuple[list[Any], Action | None]:
        """Nodes up to an `{{else}}` or `{{end}}` (returned) or the end of the source."""
        nodes: list[Any] = []
        while self.i < len(self.items):
            item = self.items[self.i]
            self.i += 1
            if isinstance(item, Text):
                nodes.append(TextNode(item.text, item.pos))
                continue
            keyword = _keyword(item)
            if keyword in ("end", "else"):
                return nodes, item
            if keyword in ("if", "range", "with"):
                nodes.append(self.control(keyword, item.tokens[1:], item.pos))
            elif keyword in ("break", "continue"):
                if self.range_depth == 0:
                    raise self.fail(item.pos, f"{{{{{keyword}}}}} outside {{{{range}}}}")
                if len(item.tokens) > 1:
                    raise self.fail(item.tokens[1].pos, f"unexpected {item.tokens[1].text!r} "
                                    f"in {{{{{keyword}}}}}")
                nodes.append(LoopControlNode(keyword, item.pos))
            elif keyword is not None:
                raise self.fail(item.pos, f"{{{{{keyword}}}}} is not supported in prompt "
                                "templates")
            else:
                pipe = self.whole_pipeline(_Tokens(item.tokens, item.pos), "command")
                nodes.append(ActionNode(pipe, item.pos))
        return nodes, None

    def control(self, kind: str, tokens: tuple[Token, ...], pos: int) -> BranchNode:
        """`{{if}}`, `{{range}}` or `{{with}}` up to its `{{end}}` (shared by else-if chains)."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(pos, "template nesting too deep")
        mark = len(self.variables)
        stream = _Tokens(tokens, pos)
        if not tokens:
            raise self.fail(pos, f"missing value for {kind}")
        pipe = self.whole_pipeline(stream, kind)
        self.range_depth += kind == "range"
        body, stop = self.parse_list()
        self.range_depth -= kind == "range"
        if stop is None:
            raise self.fail(pos, f"unexpected EOF: {{{{{kind}}}}} has no {{{{end}}}}")
        else_body: list[Any] | None = None
        if _keyword(stop) == "else":
            rest = stop.tokens[1:]
            if rest and rest[0].kind == "ident" and rest[0].text in ("if", "with"):
                if rest[0].text != kind:
                    raise self.fail(rest[0].pos, f"{{{{else {rest[0].text}}}}} inside "
                                    f"{{{{{kind}}}}}")
                else_body = [self.control(kind, rest[1:], rest[0].pos)]
            else:
                if rest:
                    raise self.fail(rest[0].pos, f"unexpected {rest[0].text!r} in else")
                else_body, stop = self.parse_list()
                if stop is None or _keyword(stop) != "end":
                    where = stop.pos if stop is not None else len(self.source)
                    raise self.fail(where, f"expected {{{{end}}}} for {{{{{kind}}}}}")
                self._plain_end(stop)
        else:
            self._plain_end(stop)
        del self.variables[mark:]
        self.depth -= 1
        return BranchNode(kind, pipe, tuple(body), None if else_body is None
                          else tuple(else_body), pos)

    def _plain_end(self, item: Action) -> None:
        if len(item.tokens) > 1:
            raise self.fail(item.tokens[1].pos, f"unexpected {item.tokens[1].text!r} in end")

    # -- inside actions -----------------------------------------------------------------

    def whole_pipeline(self, tokens: _Tokens, context: str) -> PipeNode:
        """A pipeline that must use every token of its action."""
        pipe = self.pipeline(tokens, context)
        extra = tokens.peek()
        if extra is not None:
            raise self.fail(extra.pos, f"unexpected {extra.text!r} in {context}")
        return pipe

    def pipeline(self, tokens: _Tokens, context: str) -> PipeNode:
        pos = tokens.pos
        declare, assign = self._declarations(tokens, context)
        commands: list[CommandNode] = []
        while True:
            commands.append(self.command(tokens))
            token = tokens.peek()
            if token is None or token.kind == ")":
                break
            if token.kind != "|":
                raise self.fail(token.pos, f"unexpected {token.text!r} in {context}")
            tokens.next()
        for stage, command in enumerate(commands[1:], start=2):
            if isinstance(command.args[0], LiteralNode | DotNode | NilNode):
                raise self.fail(command.pos, f"non executable command in pipeline stage "
                                f"{stage}")
        if not assign:
            self.variables.extend(declare)
        return PipeNode(tuple(commands), pos, tuple(declare), assign)

    def _declarations(self, tokens: _Tokens, context: str) -> tuple[list[str], bool]:
        first, second = tokens.peek(), tokens.peek(1)
        if first is None or first.kind != "var" or second is None:
            return [], False
        names = [first.text]
        if second.kind == "," and context == "range":
            third, fourth = tokens.peek(2), tokens.peek(3)
            if third is None or third.kind != "var" or fourth is None \
                    or fourth.kind not in (":=", "="):
                raise self.fail(second.pos, "expected two variables and := in range")
            names.append(third.text)
            operator = fourth
            tokens.i += 4
        elif second.kind in (":=", "="):
            operator = second
            tokens.i += 2
        elif second.kind == ",":
            raise self.fail(second.pos, f"too many declarations in {context}")
        else:
            return [], False
        if operator.kind == "=":
            for name in names:
                if name not in self.variables:
                    raise self.fail(first.pos, f'undefined variable "{name}"')
        if tokens.peek() is None or tokens.peek().kind in ("|", ")"):  # type: ignore[union-attr]
            raise self.fail(tokens.pos, f"missing value for {context}")
        return names, operator.kind == "="

    def command(self, tokens: _Tokens) -> CommandNode:
        pos = tokens.pos
        args: list[Any] = []
        while True:
            token = tokens.peek()
            if token is None or token.kind in ("|", ")"):
                break
            if args and not token.spaced:
                raise self.fail(token.pos, f"unexpected {token.text!r} in operand")
            args.append(self.operand(tokens))
        if not args:
            raise self.fail(pos, "missing value for command")
        if isinstance(args[0], NilNode):
            raise self.fail(pos, "nil is not a command")
        return CommandNode(tuple(args), pos)

    def operand(self, tokens: _Tokens) -> Any:
        node = self.term(tokens)
        names: list[str] = []
        while (token := tokens.peek()) is not None and token.kind == "field" \
                and not token.spaced:
            names.append(token.text[1:])
            tokens.next()
        if not names:
            return node
        self.fields.update(names)
        if isinstance(node, FieldNode):
            return FieldNode(node.names + tuple(names), node.pos)
        if isinstance(node, VariableNode):
            return VariableNode(node.name, node.names + tuple(names), node.pos)
        if isinstance(node, LiteralNode | DotNode | NilNode):
            raise self.fail(node.pos, "unexpected . after term")
        return ChainNode(node, tuple(names), node.pos)

    def term(self, tokens: _Tokens) -> Any:
        token = tokens.next()
        assert token is not None
        kind, pos = token.kind, token.pos
        if kind == "ident":
            if token.text in ("true", "false"):
                return LiteralNode(token.text == "true", pos)
            if token.text == "nil":
                return NilNode(pos)
            if token.text in KEYWORDS:
                raise self.fail(pos, f"unexpected {token.text!r} in operand")
            if token.text not in self.functions:
                raise self.fail(pos, f'function "{token.text}" not defined')
            return IdentifierNode(token.text, pos)
        if kind == "dot":
            return DotNode(pos)
        if kind == "field":
            self.fields.add(token.text[1:])
            return FieldNode((token.text[1:],), pos)
        if kind == "var":
            if token.text not in self.variables:
                raise self.fail(pos, f'undefined variable "{token.text}"')
            return VariableNode(token.text, (), pos)
        if kind in ("string", "char", "number"):
            return LiteralNode(token.value, pos)
        if kind == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.fail(pos, "template nesting too deep")
            pipe = self.pipeline(tokens, "parenthesized pipeline")
            close = tokens.next()
            if close is None or close.kind != ")":
                raise self.fail(pos, "unclosed left paren")
            self.depth -= 1
            return pipe
        raise self.fail(pos, f"unexpected {token.text!r} in operand")
