"""The prompt for a chat or a generate request, from the model's template, in either dialect.

`chat` and `generate` are plain functions (tests call them directly); the API awaits
`in_worker(...)`, which runs one of them in a worker thread under a fresh budget, so a slow or
hostile template never blocks the event loop and stops soon after its caller is cancelled.
A conversation that ends with an assistant message is continued: the prompt ends with that
message's text, not with a closed turn and a new one (assistant prefill).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import trio

from trio_llm.prompt import go_render, jinja
from trio_llm.prompt.budget import CURRENT, Budget
from trio_llm.prompt.template import Dialect, PromptTemplate


def _jinja_thinking(think: bool | str | None) -> dict[str, Any]:
    return {} if think is None else {"enable_thinking": think is not False,
                                     "reasoning_effort": think if isinstance(think, str)
                                     else None}


def chat(template: PromptTemplate, messages: Sequence[Mapping[str, Any]], *,
         tools: Sequence[Mapping[str, Any]] | None = None, think: bool | str | None = None,
         bos_token: str = "", eos_token: str = "", budget: Budget | None = None) -> str:
    """The prompt for a conversation."""
    budget = budget or Budget().start()
    if template.dialect is Dialect.GO:
        return go_render.render_messages(template.source, messages, tools=tools,
                                         thinking=go_render.Thinking.from_request(think),
                                         budget=budget)
    _, turns = go_render.collate(messages)
    prefill = ""
    if turns and turns[-1].get("role") == "assistant":
        prefill = str(turns[-1].get("content") or "")
        if not prefill:
            turns = turns[:-1]
    variables = {"messages": turns, "add_generation_prompt": not prefill,
                 "bos_token": bos_token, "eos_token": eos_token,
                 "tools": list(tools) if tools else None, **_jinja_thinking(think)}
    text = jinja.render(template.source, variables, budget)
    if prefill:
        at = text.rfind(prefill)
        if at >= 0:
            text = text[:at + len(prefill)]
    return text


def generate(template: PromptTemplate, prompt: str, *, system: str = "", suffix: str = "",
             messages: Sequence[Mapping[str, Any]] = (), think: bool | str | None = None,
             bos_token: str = "", eos_token: str = "", budget: Budget | None = None) -> str:
    """The prompt for /api/generate: `system`, the Modelfile's messages and the prompt as a
    user turn through the template; with a suffix, the fill-in-the-middle form."""
    budget = budget or Budget().start()
    if template.dialect is Dialect.GO and suffix:
        return go_render.render_fill_in(template.source, prompt, suffix,
                                        go_render.Thinking.from_request(think), budget)
    turns: list[Mapping[str, Any]] = []
    if system:
        turns.append({"role": "system", "content": system})
    turns.extend(messages)
    turns.append({"role": "user", "content": prompt})
    if template.dialect is Dialect.GO:
        return chat(template, turns, think=think, budget=budget)
    _, collated = go_render.collate(turns)
    variables = {"messages": collated, "add_generation_prompt": True,
                 "bos_token": bos_token, "eos_token": eos_token, "tools": None,
                 "prompt": prompt, "system": system, "suffix": suffix,
                 **_jinja_thinking(think)}
    return jinja.render(template.source, variables, budget)


async def in_worker(render: Callable[..., str], *args: Any, **kwargs: Any) -> str:
    """Run `chat` or `generate` in a worker thread with its own budget. Cancelling the caller
    returns at once and stops the rendering at its next budget check."""
    budget = Budget()

    def run() -> str:
        budget.start()
        token = CURRENT.set(budget)
        try:
            return render(*args, budget=budget, **kwargs)
        finally:
            CURRENT.reset(token)

    try:
        return await trio.to_thread.run_sync(run, abandon_on_cancel=True)
    finally:
        budget.cancel()
