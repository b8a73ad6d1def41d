"""Hostile templates: rendering runs in a worker thread under a time, output and iteration
budget, in both dialects; a template that exceeds one is a 400 naming it, and the server keeps
answering meanwhile and afterwards."""

from __future__ import annotations

from functools import partial

import httpx
import pytest
import trio

from trio_llm.api import serve
from trio_llm.config import Host
from trio_llm.prompt import TemplateFailed, chat, in_worker, load
from trio_llm.prompt.budget import Budget
from trio_llm.testing.fake_backend import FakeBackend

NESTED_STRING_LOOPS = ("{% for a in 'x'*12000 %}{% for b in 'x'*12000 %}{% endfor %}"
                       "{% endfor %}")
MESSAGES = [{"role": "user", "content": "x"}]


@pytest.mark.parametrize(("template", "budget"), [
    # loops: every iteration counts, over strings, lists, ranges and integers
    (NESTED_STRING_LOOPS, "iteration"),
    ("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
     "iteration"),
    ("{{ range 100000000 }}{{ end }}", "iteration"),
    ("{{ range $a := 5000 }}{{ range $b := 5000 }}{{ end }}{{ end }}", "iteration"),
    # strings built along the way count, not only the output
    ("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
     "{% endfor %}", "output"),
    ("{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}"
     "{% endfor %}", "output"),
    ("{{ 'x' * 100000000 }}", "output"),
    ("{{ 'x' | center(1000000000) }}", "output"),
    ("{{ '%1000000000s' % 'x' }}", "output"),
    ("{{ '{:>1000000000}'.format('x') }}", "output"),
    ("{{ 'x'.ljust(1000000000) }}", "output"),
    ("{% set l = ['x' * 1000000] * 100 %}{{ l | join }}", "output"),
    ("{% for i in range(1000) %}" + "y" * 20000 + "{% endfor %}", "output"),
    ('{{ $s := "xx" }}{{ range 40 }}{{ $s = print $s $s }}{{ end }}', "output"),
    ('{{ printf "%1000000000d" 1 }}', "output"),
])
def test_a_template_past_its_budget_fails_naming_the_budget(template: str, budget: str) -> None:
    with pytest.raises(TemplateFailed, match=f"exceeded its {budget} budget"):
        chat(load(template), MESSAGES)
    assert MESSAGES == [{"role": "user", "content": "x"}]


@pytest.mark.parametrize("template", [
    "{{ range $a := 100000000 }}{{ end }}",
    "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
])
def test_the_time_budget_stops_a_slow_rendering(template: str) -> None:
    budget = Budget(seconds=0.05, iterations=10**12).start()
    with pytest.raises(TemplateFailed, match="exceeded its time budget"):
        chat(load(template), MESSAGES, budget=budget)


def test_calls_count_as_iterations_so_exponential_recursion_stops() -> None:
    template = ("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
                "{{ f(30) }}")
    with pytest.raises(TemplateFailed, match="exceeded its iteration budget"):
        chat(load(template), MESSAGES, budget=Budget(iterations=10_000).start())


def test_a_cancelled_rendering_stops_at_its_next_check() -> None:
    budget = Budget().start()
    budget.cancel()
    with pytest.raises(TemplateFailed, match="cancelled"):
        chat(load("{{ range 10 }}{{ end }}"), MESSAGES, budget=budget)


async def test_rendering_leaves_the_event_loop_free() -> None:
    """While a slow template renders, the event loop keeps running other tasks."""
    loop_turns = 0
    done = trio.Event()

    async def hostile() -> None:
        try:
            with pytest.raises(TemplateFailed, match="iteration budget"):
                await in_worker(chat, load(NESTED_STRING_LOOPS), MESSAGES)
        finally:
            done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hostile)
        while not done.is_set():
            loop_turns += 1
            await trio.sleep(0.001)
    assert loop_turns > 1


@pytest.fixture
async def fake_server(nursery: trio.Nursery) -> Host:
    """The API over the fake backend on a free loopback port."""
    return await nursery.start(partial(serve, FakeBackend(), "127.0.0.1:0"))


async def test_a_hostile_template_is_a_400_and_version_answers_meanwhile(
        fake_server: Host) -> None:
    server = fake_server
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        outcome: dict[str, object] = {}
        answered_meanwhile = 0

        async def hostile() -> None:
            reply = await client.post("/api/generate", json={
                "model": "fake", "prompt": "hi", "stream": False,
                "template": NESTED_STRING_LOOPS})
            outcome["reply"] = reply

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hostile)
            while "reply" not in outcome:
                version = await client.get("/api/version")
                if "reply" not in outcome and version.status_code == 200:
                    answered_meanwhile += 1
                await trio.sleep(0.01)
        reply = outcome["reply"]
        assert isinstance(reply, httpx.Response) and reply.status_code == 400
        assert "exceeded its iteration budget" in reply.json()["error"]
        assert answered_meanwhile >= 1
        ok = await client.post("/api/generate", json={"model": "fake", "prompt": "hi",
                                                      "stream": False, "think": False})
        assert ok.status_code == 200 and ok.json()["response"]


@pytest.mark.parametrize("template", [
    "{{ .Messages.__class__ }}", "{{ range .Messages }}{{ .__dict__ }}{{ end }}",
    "{{ index . \"__class__\" }}",
])
def test_go_templates_reach_no_python_attribute(template: str) -> None:
    try:
        out = chat(load(template), MESSAGES)
    except TemplateFailed as failure:
        assert "can't evaluate field" in failure.message or "template error" in failure.message
    else:
        assert "class" not in out and "dict" not in out
