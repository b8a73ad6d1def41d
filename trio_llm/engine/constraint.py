"""Constrained decoding: a grammar that each generated token must keep satisfiable.

Three parts with three lifetimes, all over the `llguidance` library (a Rust matcher that turns
JSON schemas, regexes and Lark grammars into a token mask per step in microseconds):
- `Constraint` (one request): the grammar, checked when the request arrives and before any
  model is involved, so a schema the library cannot enforce is a 400 naming the problem,
  never a generation that quietly ignores it;
- `GrammarVocabulary` (one model): our GGUF vocabulary's token bytes, stop ids and encoder, as
  the library's tokenizer (about 0.1-0.2 s to build, so it is built once, on first use);
- `GrammarState` (one sequence): where that sequence is in its grammar, and its next mask.
`MaskPrefetch` computes the masks of a batch's constrained sequences on a helper thread while
the forward pass runs, so they are ready when the logits are.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import llguidance
import numpy as np

from trio_llm.errors import BadRequest

if TYPE_CHECKING:
    from trio_llm.engine.batch import Batch
    from trio_llm.engine.slots import StepPlan
    from trio_llm.engine.tokenizer import Tokenizer

# Whitespace JSON output may hold at each place where JSON allows it: none, one space, or a
# newline and up to 20 spaces or tabs of indent (the bound llama.cpp's JSON grammar uses). The
# model writes JSON the way it learnt it (pretty-printed or not), but can never spend its whole
# budget on whitespace.
JSON_WHITESPACE = r"( |\n[ \t]{0,20})?"

# The JSON-schema compiler's settings. `lenient` off: a keyword the library does not implement
# is an error, whatever the schema's own "x-guidance" says; oneOf is never quietly weakened to
# anyOf.
JSON_OPTIONS: dict[str, Any] = {"whitespace_flexible": True, "whitespace_pattern": JSON_WHITESPACE,
                                "lenient": False, "coerce_one_of": False}

# `format: "json"` and `response_format: json_object`: any JSON object, as Ollama does
# (RFC 8259's grammar, with the whitespace above). Numbers have at most 16 digits before and
# after the point, as llama.cpp's JSON grammar bounds them, so a small model cannot spend its
# whole budget on one number.
ANY_JSON_GRAMMAR = r"""
start: object
value: object | array | STRING | NUMBER | "true" | "false" | "null"
object: "{" WS? (pair ("," WS? pair)*)? WS? "}"
pair: STRING WS? ":" WS? value
array: "[" WS? (value WS? ("," WS? value WS?)*)? "]"
STRING: /"([^"\\\x00-\x1f]|\\["\\\/bfnrt]|\\u[0-9a-fA-F]{4})*"/
NUMBER: /-?(0|[1-9][0-9]{0,15})(\.[0-9]{1,16})?([eE][+-]?[0-9]{1,3})?/
WS: / |\n[ \t]{0,20}/
"""


class InvalidConstraint(BadRequest):
    """A format, schema, regex or grammar the matcher cannot enforce exactly (HTTP 400)."""


class ConstraintKind(StrEnum):
    JSON = "json"                  # any JSON object
    JSON_SCHEMA = "json_schema"
    REGEX = "regex"
    GRAMMAR = "grammar"            # Lark, or GBNF converted to Lark


@dataclass(frozen=True)
class Constraint:
    """What a generation must match, as the library's checked grammar text.

    Build one with the class methods; each raises InvalidConstraint for anything the library
    would not enforce. They cost up to milliseconds for large schemas: call them from a worker
    thread (trio_llm.api.constraints does)."""

    kind: ConstraintKind
    grammar: str

    @classmethod
    def any_json(cls) -> Constraint:
        grammar = llguidance.LLMatcher.grammar_from_lark(ANY_JSON_GRAMMAR)
        return cls._checked(ConstraintKind.JSON, grammar, "format")

    @classmethod
    def json_schema(cls, schema: Mapping[str, Any]) -> Constraint:
        """Output that validates against `schema` (a JSON Schema object)."""
        if not isinstance(schema, Mapping):
            raise InvalidConstraint("invalid JSON schema: expected a JSON object")
        return cls._checked(ConstraintKind.JSON_SCHEMA, _schema_grammar(schema), "JSON schema")

    @classmethod
    def regex(cls, pattern: str) -> Constraint:
        """Output that matches `pattern` whole (Rust regex syntax, no look-around)."""
        if not pattern:
            raise InvalidConstraint("invalid regex: empty pattern")
        grammar = llguidance.LLMatcher.grammar_from_regex(pattern)
        return cls._checked(ConstraintKind.REGEX, grammar, "regex")

    @classmethod
    def lark(cls, text: str) -> Constraint:
        """Output that the grammar derives: Lark syntax, or a GBNF grammar (`root ::= ...`),
        which the library converts to Lark."""
        if not text.strip():
            raise InvalidConstraint("invalid grammar: empty grammar")
        try:
            grammar = llguidance.grammar_from("grammar", text)
        except ValueError as exc:
            raise InvalidConstraint(f"invalid grammar: {exc}") from None
        return cls._checked(ConstraintKind.GRAMMAR, grammar, "grammar")

    @classmethod
    def _checked(cls, kind: ConstraintKind, grammar: str, what: str) -> Constraint:
        failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
        if failed or messages:  # a warning means something would not be enforced
            raise InvalidConstraint(f"invalid {what}: {_message(messages)}")
        return cls(kind, grammar)


def _schema_grammar(schema: Mapping[str, Any]) -> str:
    try:
        return llguidance.LLMatcher.grammar_from_json_schema(
            json.dumps(schema), overrides=JSON_OPTIONS)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InvalidConstraint(f"invalid JSON schema: {exc}") from None


def _message(messages: list[str]) -> str:
    """The library's message on one line, without the excerpt of the grammar and the carets
    it draws under the problem."""
    lines = [line.strip() for text in messages for line in text.splitlines()]
    kept = [line for line in lines if line and set(line) != {"^"} and not _EXCERPT.match(line)]
    return " ".join(kept) or "rejected by the grammar compiler"


_EXCERPT = re.compile(r"\d+ \| ")


class _VocabularySource:
    """Our tokenizer in the shape llguidance.TokenizerWrapper reads: token bytes, the BOS/EOS
    ids, the control tokens, and a callable that encodes text as plain text."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        n = tokenizer.vocab_size
        self.tokens = [tokenizer.token_bytes(i) for i in range(n)]
        self.eos_token_id = tokenizer.eos_id if tokenizer.eos_id is not None else min(
            tokenizer.eot_ids, default=0)
        self.bos_token_id = tokenizer.bos_id
        self.special_token_ids = [i for i in range(n) if tokenizer.is_control(i)]

    def __call__(self, text: bytes | str) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        return self._tokenizer.encode(text, add_special=False, parse_special=False)


class GrammarVocabulary:
    """One model's vocabulary as the matcher's tokenizer; makes each sequence's GrammarState.

    Every end-of-generation token of the model counts as the grammar's end: the mask allows
    them exactly when the output so far is complete."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.vocab_size = tokenizer.vocab_size
        source = _VocabularySource(tokenizer)
        self._tokenizer = llguidance.LLTokenizer(llguidance.TokenizerWrapper(source),
                                                 eos_token=sorted(tokenizer.eot_ids))

    def start(self, constraint: Constraint) -> GrammarState:
        """A fresh matcher at the start of the grammar; InvalidConstraint if the grammar
        cannot work with this vocabulary (raised before any token is generated)."""
        matcher = llguidance.LLMatcher(self._tokenizer, constraint.grammar, log_level=0)
        if matcher.is_error():
            raise InvalidConstraint(f"invalid {constraint.kind.value}: "
                                    f"{_message([matcher.get_error()])}")
        return GrammarState(matcher, self.vocab_size)


class LazyGrammarVocabulary:
    """A GrammarVocabulary built on first use (unconstrained models never pay for it), once,
    whichever worker threads ask for it at the same time."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._built: GrammarVocabulary | None = None
        self._lock = threading.Lock()

    def start(self, constraint: Constraint) -> GrammarState:
        with self._lock:
            if self._built is None:
                self._built = GrammarVocabulary(self._tokenizer)
        return self._built.start(constraint)


class GrammarState:
    """One sequence's place in its grammar: the tokens it allows next, what it has consumed.

    `compute_mask` may run on another thread than the rest, but never at the same time as
    `consume` (the step waits for the masks before it samples)."""

    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int) -> None:
        self._matcher = matcher
        self.vocab_size = vocab_size
        self._words = np.zeros((vocab_size + 31) // 32, dtype=np.int32)  # bit t: token t
        self._fresh = False

    def compute_mask(self) -> None:
        """Fill the mask for the current state (the library releases the GIL meanwhile)."""
        if not self._fresh:
            self._matcher.unsafe_compute_mask_ptr(self._words.ctypes.data, self._words.nbytes)
            self._fresh = True

    def allowed(self) -> np.ndarray:
        """bool [vocab_size]: True for each token the grammar allows next."""
        self.compute_mask()
        bits = np.unpackbits(self._words.view(np.uint8), bitorder="little")
        return bits[: self.vocab_size].view(np.bool_)

    def consume(self, token: int) -> None:
        self._matcher.consume_token(token)
        self._fresh = False

    @property
    def finished(self) -> bool:
        """The output is complete and nothing more can follow it."""
        return self._matcher.is_stopped() and not self._matcher.is_error()

    @property
    def error(self) -> str | None:
        """Why the matcher gave up (an internal limit, a token it could not take), if it did."""
        if not self._matcher.is_error():
            return None
        return self._matcher.get_error() or "the matcher stopped"


class MaskPrefetch:
    """Runs a step's forward pass while a helper thread computes the constrained sequences'
    masks, which depend only on tokens already sampled. The helper starts with the first
    constrained step; `close` stops it."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None

    def forward(self, plan: StepPlan, forward: Callable[[Batch], np.ndarray]) -> np.ndarray:
        grammars = [s.grammar for s in plan.readers if s.grammar is not None]
        if not grammars:
            return forward(plan.batch)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grammar-mask")
        masks: Future[None] = self._pool.submit(_compute_masks, grammars)
        try:
            return forward(plan.batch)
        finally:
            masks.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _compute_masks(grammars: list[GrammarState]) -> None:
    for grammar in grammars:
        grammar.compute_mask()
