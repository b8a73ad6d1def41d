"""Serving real models through the scheduler: models share one compute executor without
changing each other's text, a new prompt is evaluated beside running decodes (chunked prefill),
and a request cancelled mid-prefill gives its slot back.

Real SmolLM2 (twice, under two names) and Gemma 3, the real EngineFactory, the real clock.
Ordering is asserted, never timing.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import aclosing
from pathlib import Path
from typing import Any

import trio

from trio_llm.engine.slots import BACKGROUND_DELAY
from trio_llm.nursery import SchedulerSettings, open_scheduler
from trio_llm.nursery.engine_runner import EmbedJob, EngineFactory, EngineRunner, GenerateJob
from trio_llm.nursery.runner import ResolvedModel
from trio_llm.nursery.scheduler import Scheduler
from trio_llm.testing.fakes import FakeDevices

CTX = 1024
COUNTING = "1, 2, 3, 4, 5, 6, 7,"   # greedy SmolLM2 keeps counting: no early end of text


class Files:
    """Model names to GGUF files (one file may have several names: two loaded copies)."""

    def __init__(self, files: Mapping[str, Path]) -> None:
        self.files = dict(files)

    async def resolve(self, name: str) -> ResolvedModel:
        await trio.lowlevel.checkpoint()
        return ResolvedModel(name=name, path=self.files[name],
                             digest=f"{abs(hash(name)):064x}"[:64])


def settings(**kw: Any) -> SchedulerSettings:
    return SchedulerSettings(context_length=CTX, keep_alive=300.0, kv_cache_type="f16", **kw)


async def generate(sched: Scheduler, name: str, prompt: str, n: int,
                   log: list[tuple[str, str]] | None = None, tag: str = "",
                   options: Mapping[str, Any] | None = None) -> str:
    """A greedy generation; `log` gets (tag, "start") as it asks, (tag, "first") at its first
    piece, (tag, "piece") at each later one and (tag, "done") at the end."""
    opts = {"temperature": 0, "num_predict": n, **(options or {})}
    if log is not None:
        log.append((tag, "start"))
    async with sched.acquire(name, options) as lease:
        pieces = []
        async with aclosing(lease.serve(GenerateJob(prompt, opts))) as outputs:
            async for out in outputs:
                if log is not None:
                    log.append((tag, "piece" if pieces else "first"))
                pieces.append(out.text)
                if out.done_reason is not None:
                    assert out.done_reason == "length" and out.eval_count == n
    if log is not None:
        log.append((tag, "done"))
    return "".join(pieces)


def runner(sched: Scheduler, name: str) -> EngineRunner:
    model = sched.model(name)
    assert model is not None and isinstance(model.runner, EngineRunner)
    return model.runner


async def alone_then_together(sched: Scheduler, jobs: list[tuple[str, str]], n: int
                              ) -> tuple[list[str], list[str]]:
    alone = [await generate(sched, name, prompt, n) for name, prompt in jobs]
    together = [""] * len(jobs)

    async def one(i: int) -> None:
        together[i] = await generate(sched, *jobs[i], n)

    async with trio.open_nursery() as nursery:
        for i in range(len(jobs)):
            nursery.start_soon(one, i)
    return alone, together


async def test_two_copies_of_a_model_generating_at_once_give_each_the_text_it_gives_alone(
        smollm2_path: Path) -> None:
    files = Files({"first": smollm2_path, "second": smollm2_path})
    jobs = [("first", "The capital of France is"), ("second", COUNTING)]
    with trio.fail_after(300):
        async with open_scheduler(EngineFactory(), FakeDevices(), files, settings()) as sched:
            alone, together = await alone_then_together(sched, jobs, 24)
            a, b = runner(sched, "first"), runner(sched, "second")
            assert a.model.ops is b.model.ops        # one kernel thread pool for both
            assert a.compute is b.compute
    assert together == alone and all(t.strip() for t in alone)


async def test_smollm2_and_gemma3_generating_at_once_give_each_the_text_it_gives_alone(
        smollm2_path: Path, gemma3_path: Path) -> None:
    files = Files({"smollm2": smollm2_path, "gemma3": gemma3_path})
    jobs = [("smollm2", COUNTING), ("gemma3", "The capital of France is")]
    with trio.fail_after(600):
        async with open_scheduler(EngineFactory(), FakeDevices(), files, settings()) as sched:
            alone, together = await alone_then_together(sched, jobs, 16)
            assert runner(sched, "smollm2").model.ops is runner(sched, "gemma3").model.ops
    assert together == alone and all(t.strip() for t in alone)


async def embed(sched: Scheduler, name: str, texts: list[str]) -> list[bytes]:
    """Each vector's float32 bytes (compared bit for bit)."""
    async with sched.acquire(name) as lease:
        async with aclosing(lease.serve(EmbedJob(texts))) as outputs:
            return [v.tobytes() for v in (await outputs.__anext__()).embeddings]


async def test_embeddings_computed_while_a_chat_model_generates_equal_those_computed_alone(
        smollm2_path: Path, bert_path: Path) -> None:
    files = Files({"smollm2": smollm2_path, "minilm": bert_path})
    texts = [f"Document {i} is about {topic}." for i, topic in
             enumerate(["cats", "the sea", "trains", "bread"] * 4)]
    with trio.fail_after(300):
        async with open_scheduler(EngineFactory(), FakeDevices(), files, settings()) as sched:
            alone_text = await generate(sched, "smollm2", COUNTING, 24)
            alone_vectors = [await embed(sched, "minilm", [t]) for t in texts]
            together_vectors: list[list[bytes]] = []

            async def embed_all() -> None:
                for t in texts:          # one request per text: many turns beside the decode
                    together_vectors.append(await embed(sched, "minilm", [t]))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(embed_all)
                together_text = await generate(sched, "smollm2", COUNTING, 24)
            assert runner(sched, "smollm2").model.ops is runner(sched, "minilm").model.ops
    assert together_text == alone_text
    assert together_vectors == alone_vectors


LONG_PROMPT = " ".join(f"Item {i} is a {['red', 'green', 'blue'][i % 3]} box." for i in range(60))


async def test_a_request_arriving_while_three_decode_gets_its_first_token_before_any_finishes(
        smollm2_path: Path) -> None:
    files = Files({"smollm2": smollm2_path})
    log: list[tuple[str, str]] = []
    texts: dict[str, str] = {}

    async def run(tag: str, prompt: str, n: int) -> None:
        texts[tag] = await generate(sched, "smollm2", prompt, n, log, tag)

    with trio.fail_after(300):
        async with open_scheduler(EngineFactory(), FakeDevices(), files,
                                  settings(num_parallel=4, prefill_chunk=64)) as sched:
            alone = await generate(sched, "smollm2", COUNTING, 48)
            async with trio.open_nursery() as nursery:
                for i in range(3):
                    nursery.start_soon(run, f"r{i}", COUNTING, 48)
                while sum(what == "first" for _, what in log) < 3:
                    await trio.sleep(0.001)
                nursery.start_soon(run, "late", LONG_PROMPT, 4)   # 530 tokens: 9 chunks
            late = runner(sched, "smollm2")
            assert late.table.free_slots == 4
    first_late = log.index(("late", "first"))
    assert all(log.index((f"r{i}", "done")) > first_late for i in range(3)), log
    # the running streams kept flowing while the late prompt was evaluated, a chunk a step
    during = log[log.index(("late", "start")): first_late]
    assert during.count(("r0", "piece")) >= 7, log
    assert texts["r0"] == texts["r1"] == texts["r2"] == alone  # decode rows kept their bits


async def test_cancelling_a_request_mid_prefill_frees_its_slot_for_the_next(
        smollm2_path: Path) -> None:
    files = Files({"smollm2": smollm2_path})
    options = {"num_batch": 32}    # a step evaluates 32 prompt tokens: 17 steps of prefill
    with trio.fail_after(300):
        async with open_scheduler(EngineFactory(), FakeDevices(), files,
                                  settings(num_parallel=1)) as sched:
            alone = await generate(sched, "smollm2", COUNTING, 8, options=options)
            table = runner(sched, "smollm2").table
            async with trio.open_nursery() as nursery:
                nursery.start_soon(generate, sched, "smollm2", LONG_PROMPT, 8, None, "",
                                   options)
                while not any(0 < s.fed_prompt < len(s.prompt) for s in table.active):
                    await trio.sleep(0.001)
                nursery.cancel_scope.cancel()
            assert table.active == [] and table.free_slots == 1
            assert sched.busy_slots == 0
            assert await generate(sched, "smollm2", COUNTING, 8, options=options) == alone


async def test_an_answer_is_evaluated_for_the_cache_only_after_a_quiet_moment(
        smollm2_path: Path) -> None:
    """Requests come in bursts: the background evaluation of a finished answer waits until
    the model has been idle BACKGROUND_DELAY, so a request right behind the answer finds no
    background step in its way; then the answer is evaluated in full."""
    files = Files({"smollm2": smollm2_path})
    with trio.fail_after(300):
        async with open_scheduler(EngineFactory(), FakeDevices(), files,
                                  settings(num_parallel=2)) as sched:
            await generate(sched, "smollm2", COUNTING, 8)
            table = runner(sched, "smollm2").table
            [answer] = table.background
            await trio.sleep(BACKGROUND_DELAY / 3)
            assert answer.in_cache == answer.prompt      # not one answer row evaluated yet
            while answer in table.background and answer.replay:
                await trio.sleep(0.01)
            assert answer.in_cache == answer.prompt + answer.generated


async def test_an_idle_models_answer_waits_while_another_model_is_busy(
        smollm2_path: Path) -> None:
    """Background evaluation waits for the whole executor to be quiet: while a second model
    streams, the first one's finished answer takes no step from it."""
    files = Files({"smollm2": smollm2_path, "other": smollm2_path})
    done: list[str] = []

    async def stream_long() -> None:
        await generate(sched, "other", COUNTING, 300)
        done.append("other")

    with trio.fail_after(300):
        async with open_scheduler(EngineFactory(), FakeDevices(), files,
                                  settings(num_parallel=2)) as sched:
            await generate(sched, "smollm2", COUNTING, 2)           # both loaded
            await generate(sched, "other", COUNTING, 2)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream_long)
                busy = runner(sched, "other").table
                while not any(s.generated for s in busy.active):
                    await trio.sleep(0.001)
                await generate(sched, "smollm2", COUNTING, 8)
                table = runner(sched, "smollm2").table
                [answer] = table.background
                await trio.sleep(2 * BACKGROUND_DELAY)
                assert not done, "the other model's stream ended too soon to tell"
                assert answer.in_cache == answer.prompt       # not one answer row evaluated
            while answer in table.background and answer.replay:
                await trio.sleep(0.01)
            assert answer.in_cache == answer.prompt + answer.generated


async def continue_exchange(sched: Scheduler, context: list[int], prompt: str
                            ) -> tuple[str, int, int]:
    """Greedy text, prompt_eval_count and prompt_cache_count of a continued exchange."""
    job = GenerateJob(prompt, {"temperature": 0, "num_predict": 8}, tuple(context))
    async with sched.acquire("smollm2") as lease:
        async with aclosing(lease.serve(job)) as outputs:
            pieces = [out async for out in outputs]
    last = pieces[-1]
    return "".join(p.text for p in pieces), last.prompt_eval_count, last.prompt_cache_count


async def test_a_turn_sent_right_after_an_answer_continues_in_the_answers_slot(
        smollm2_path: Path) -> None:
    """The next turn takes the finished answer's slot, whose prompt rows begin its prompt:
    the answer is never evaluated in the background, its tokens count as cached (the model
    wrote them), and the text is the text without any cache."""
    files = Files({"smollm2": smollm2_path})
    with trio.fail_after(300):
        async with open_scheduler(EngineFactory(), FakeDevices(), files,
                                  settings(num_parallel=2, prompt_cache=0)) as plain:
            job = GenerateJob(LONG_PROMPT, {"temperature": 0, "num_predict": 8})
            async with plain.acquire("smollm2") as lease:
                async with aclosing(lease.serve(job)) as outputs:
                    context = [out async for out in outputs][-1].context
            assert context is not None
            want = await continue_exchange(plain, context, " And then?")
        async with open_scheduler(EngineFactory(), FakeDevices(), files,
                                  settings(num_parallel=2)) as sched:
            async with sched.acquire("smollm2") as lease:
                async with aclosing(lease.serve(job)) as outputs:
                    assert [out async for out in outputs][-1].context == context
            [answer] = runner(sched, "smollm2").table.background
            text, evaluated, cached = await continue_exchange(sched, context, " And then?")
            assert answer.replay == answer.generated          # no background step ran
            assert (text, evaluated + cached) == (want[0], want[1])
            assert cached == len(context)
