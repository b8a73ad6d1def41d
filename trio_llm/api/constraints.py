"""What a request's output must match: `format`, `response_format`, the `grammar` and `regex`
options, turned into one checked Constraint before the request reaches the scheduler.

Checking compiles the grammar (up to milliseconds for a large schema), so it runs in a worker
thread; anything the matcher could not enforce exactly is a 400 naming the problem, answered
before a model is loaded or a token generated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import trio

from trio_llm.api.backend import GenerationRequest
from trio_llm.engine.constraint import Constraint
from trio_llm.errors import BadRequest
from trio_llm.options import Part, names

# The options that constrain the output; they go to the constraint, not to the sampler.
CONSTRAINT_OPTIONS = names(Part.CONSTRAINT)


async def json_schema_constraint(schema: Mapping[str, Any]) -> Constraint:
    """The one way to constrain a generation to a JSON schema: put the result in
    `GenerationRequest.constraint`. Raises InvalidConstraint (400) for a schema it cannot
    enforce."""
    return await trio.to_thread.run_sync(Constraint.json_schema, schema)


async def constrained(request: GenerationRequest) -> GenerationRequest:
    """`request` with the constraint its format or options ask for (at most one of them), and
    without the constraint options. A request that already carries a constraint (set by the
    route, e.g. for tool calls) keeps it, and then may not ask for another."""
    options = {k: v for k, v in request.options.items() if k not in CONSTRAINT_OPTIONS}
    sources = [name for name, value in (("format", request.format),
                                        ("grammar", request.options.get("grammar")),
                                        ("regex", request.options.get("regex"))) if value]
    if request.constraint is not None and sources:
        raise BadRequest(f"{sources[0]} cannot be combined with the request's own constraint")
    if len(sources) > 1:
        raise BadRequest(f"{' and '.join(sources)} cannot be combined: choose one constraint")
    constraint = request.constraint
    if sources:
        constraint = await trio.to_thread.run_sync(_builder(request, sources[0]))
    return replace(request, options=options, constraint=constraint)


def _builder(request: GenerationRequest, source: str) -> Callable[[], Constraint]:
    if source == "format":
        fmt = request.format
        if fmt == "json":
            return Constraint.any_json
        if not isinstance(fmt, Mapping):
            raise BadRequest(f"invalid format: {fmt!r}; expected \"json\" or a valid JSON "
                             "Schema object")
        return lambda: Constraint.json_schema(fmt)
    text = request.options[source]
    return (lambda: Constraint.lark(text)) if source == "grammar" else (
        lambda: Constraint.regex(text))
