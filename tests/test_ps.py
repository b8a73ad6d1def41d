"""The ps strings (UNTIL, SIZE, timestamps) and the small parts: KeepAlive, SlotQueue, settings."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
import trio

from trio_llm.cli.format import human_bytes, human_duration, parse_rfc3339, until_text
from trio_llm.nursery import SchedulerSettings, rfc3339
from trio_llm.nursery.admission import SlotQueue
from trio_llm.nursery.keep_alive import KeepAlive
from trio_llm.nursery.ps import FOREVER_SECONDS, wall_time

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("seconds", "text"), [
    (0.5, "Less than a second"), (1.2, "1 second"), (45, "45 seconds"), (60, "About a minute"),
    (119, "About a minute"), (299.9, "4 minutes"), (300, "5 minutes"), (3600, "About an hour"),
    (5 * 3600, "5 hours"), (3 * 86400, "3 days"), (20 * 86400, "2 weeks"),
    (90 * 86400, "3 months"), (800 * 86400, "2 years"),
])
def test_human_duration(seconds: float, text: str):
    assert human_duration(seconds) == text


def test_until_column():
    assert until_text(NOW + timedelta(seconds=299.5), NOW) == "4 minutes from now"
    assert until_text(NOW - timedelta(seconds=1), NOW) == "Stopping..."
    assert until_text(NOW + timedelta(seconds=FOREVER_SECONDS), NOW) == "Forever"
    assert until_text(NOW + timedelta(days=365 * 10), NOW) == "10 years from now"


def test_forever_is_about_292_years_ahead():
    forever = wall_time(math.inf)
    years = (forever - datetime.now().astimezone()).days / 365.25
    assert 291 < years < 293
    assert until_text(forever) == "Forever"


def test_rfc3339_round_trips_and_reads_go_nanoseconds():
    moment = datetime(2024, 6, 4, 14, 38, 31, 837534, tzinfo=timezone(timedelta(hours=-7)))
    assert rfc3339(moment) == "2024-06-04T14:38:31.837534-07:00"
    assert parse_rfc3339(rfc3339(moment)) == moment
    assert parse_rfc3339("2024-06-04T14:38:31.837534123-07:00") == moment
    assert parse_rfc3339("2024-06-04T21:38:31.8375Z") == moment.replace(microsecond=837500)


@pytest.mark.parametrize(("n", "text"), [
    (98_362_432, "98 MB"), (9_600_000_000, "9.6 GB"), (42_000_000_000, "42 GB"),
    (512, "512 B"), (1_000_000_000, "1 GB"), (1_500, "1.5 KB"),
])
def test_size_column(n: int, text: str):
    assert human_bytes(n) == text


async def test_keep_alive_fires_at_its_deadline_and_holds_while_busy(autojump_clock):
    keep = KeepAlive(10.0)
    async with trio.open_nursery() as nursery:
        fired: list[float] = []

        async def waiter() -> None:
            await keep.wait()
            fired.append(trio.current_time())

        nursery.start_soon(waiter)
        await trio.sleep(5)
        keep.release()  # idle from t=5
        await trio.sleep(8)
        keep.hold()  # busy at t=13: the timer stops
        await trio.sleep(100)
        assert not fired and not keep.expired
        keep.release()
    assert fired == [pytest.approx(123.0)]
    assert keep.expired


async def test_keep_alive_expire_is_immediate_and_final(autojump_clock):
    keep = KeepAlive(math.inf)
    assert keep.expires_at() == math.inf
    keep.release()
    assert not keep.expired
    keep.expire()
    assert keep.expired
    keep.hold()  # too late: a fired timer stays fired
    assert keep.expired
    await keep.wait()


async def test_slot_queue_is_first_come_first_served_and_leaving_frees():
    slots = SlotQueue(1)
    first, second, third = slots.take_place(), slots.take_place(), slots.take_place()
    assert first.granted and not second.granted and slots.waiting == 2
    slots.leave(second)  # gave up while waiting: loses its place, frees nothing
    assert slots.waiting == 1 and slots.in_use == 1
    slots.leave(first)
    assert third.granted
    slots.leave(third)
    slots.leave(third)  # idempotent
    assert slots.in_use == 0 and slots.waiting == 0
    assert slots.take_place().granted


def test_settings_read_the_environment_through_config():
    settings = SchedulerSettings.from_env({
        "OLLAMA_KEEP_ALIVE": "-1", "OLLAMA_NUM_PARALLEL": "4", "OLLAMA_MAX_QUEUE": "7",
        "OLLAMA_MAX_LOADED_MODELS": "2", "OLLAMA_CONTEXT_LENGTH": "8192",
        "OLLAMA_SCHED_SPREAD": "1", "OLLAMA_GPU_OVERHEAD": "1000", "OLLAMA_LOAD_TIMEOUT": "0",
    })
    assert settings.keep_alive == math.inf
    assert settings.slots == 4 and settings.max_queue == 7 and settings.max_loaded(4) == 2
    assert settings.default_context == 8192
    assert settings.sched_spread and settings.gpu_overhead == 1000
    assert settings.load_deadline == math.inf
    defaults = SchedulerSettings.from_env({})
    assert (defaults.keep_alive, defaults.slots, defaults.max_queue) == (300.0, 1, 512)
    assert defaults == SchedulerSettings()
