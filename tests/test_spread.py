"""Spreading a batch of jobs across a window (issue 11, item 7): every run time inside the
window, each within jitter × slot of its linear time, idempotent by batch id, one
pipelined call."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shunter.sync
from shunter import InvalidInput, Queue, State
from shunter.flow import spread_entries, spread_offsets

from .conftest import REDIS_URL


@settings(max_examples=300, deadline=None)
@given(count=st.integers(0, 500), start=st.floats(0, 1e5), length=st.floats(0, 1e5),
       jitter=st.floats(0, 1), seed=st.integers(0, 2**32))
def test_every_time_is_in_the_window_and_near_its_slot(count: int, start: float, length: float,
                                                       jitter: float, seed: int) -> None:
    end = start + length
    times = spread_offsets(count, start, end, jitter=jitter, rng=random.Random(seed))
    assert len(times) == count
    slot = length / count if count else 0.0
    for i, at in enumerate(times):
        assert start <= at <= end
        linear = start + (i + 0.5) * slot
        assert abs(at - linear) <= jitter * slot + 1e-6 * max(1.0, end)


@settings(max_examples=200, deadline=None)
@given(count=st.integers(2, 300), length=st.floats(1, 1e5), jitter=st.floats(0, 0.5),
       seed=st.integers(0, 2**32))
def test_up_to_half_a_slot_of_jitter_keeps_the_order(count: int, length: float, jitter: float,
                                                     seed: int) -> None:
    times = spread_offsets(count, 0.0, length, jitter=jitter, rng=random.Random(seed))
    assert times == sorted(times)


def test_random_order_still_gives_each_job_its_own_slot() -> None:
    times = spread_offsets(100, 0.0, 100.0, jitter=0.0, order="random", rng=random.Random(1))
    assert sorted(times) == [i + 0.5 for i in range(100)]
    assert times != sorted(times)


def test_the_same_batch_id_gives_the_same_times() -> None:
    entries = [{"task": "t", "data": i} for i in range(50)]
    a = spread_entries(entries, start=10, end=110, jitter=0.3, batch_id="post-1")
    b = spread_entries(entries, start=10, end=110, jitter=0.3, batch_id="post-1")
    assert [e["delay"] for e in a] == [e["delay"] for e in b]
    assert [e["job_id"] for e in a] == [f"post-1.{i}" for i in range(50)]
    c = spread_entries(entries, start=10, end=110, jitter=0.3, batch_id="post-2")
    assert [e["delay"] for e in c] != [e["delay"] for e in a]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"start": 10, "end": 5}, "start <= end"),
    ({"start": -1, "end": 5}, "between 0 and 366 days"),
    ({"start": 0, "end": 400 * 86400}, "between 0 and 366 days"),
    ({"start": 0, "end": float("nan")}, "seconds from now"),
    ({"start": 0, "end": "1h"}, "seconds from now"),
    ({"start": 0, "end": 10, "jitter": 1.5}, "jitter"),
    ({"start": 0, "end": 10, "jitter": -0.1}, "jitter"),
    ({"start": 0, "end": 10, "order": "zigzag"}, "order"),
    ({"start": 0, "end": 10, "batch_id": "has space"}, "job id"),
    ({"start": 0, "end": 10, "batch_id": "x" * 101}, "batch_id"),
    ({"start": datetime.now(UTC), "end": 10}, "both be datetimes"),
    ({"start": datetime(2030, 1, 1), "end": datetime(2030, 1, 2)}, "timezone-aware"),
])
def test_bad_windows_and_options_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        spread_entries([{"task": "t"}], **kwargs)


def test_entries_must_not_set_their_own_time() -> None:
    with pytest.raises(InvalidInput, match="sets each job's time"):
        spread_entries([{"task": "t", "delay": 5}], start=0, end=10)
    with pytest.raises(InvalidInput, match="list of add_bulk entries"):
        spread_entries({"task": "t"}, start=0, end=10)  # type: ignore[arg-type]


@pytest.mark.redis
async def test_add_spread_schedules_inside_the_window(queue: Queue) -> None:
    start = datetime.now(UTC) + timedelta(hours=1)
    end = start + timedelta(minutes=30)
    jobs = await queue.add_spread([{"task": "like", "data": {"member": i}} for i in range(300)],
                                  start=start, end=end, jitter=0.1, batch_id="post-9")
    assert [j.id for j in jobs] == [f"post-9.{i}" for i in range(300)]
    assert all(j.state is State.SCHEDULED for j in jobs)
    slot = (end - start) / 300
    for i, job in enumerate(jobs):
        assert job.scheduled_for is not None
        assert start - timedelta(milliseconds=1) <= job.scheduled_for <= end + timedelta(milliseconds=1)
        linear = start + slot * (i + 0.5)
        assert abs((job.scheduled_for - linear).total_seconds()) <= 0.1 * slot.total_seconds() + 0.002
    # the post event delivered twice: the same jobs come back, nothing is added
    again = await queue.add_spread([{"task": "like", "data": {"member": i}} for i in range(300)],
                                   start=start, end=end, jitter=0.1, batch_id="post-9")
    assert all(j.existing for j in again)
    assert (await queue.counts())["scheduled"] == 300


@pytest.mark.redis
async def test_add_spread_in_seconds_from_now_and_from_sync_code(queue: Queue) -> None:
    jobs = await queue.add_spread([{"task": "t"} for _ in range(10)], start=60, end=120, jitter=0)
    times = [j.scheduled_for.timestamp() for j in jobs if j.scheduled_for is not None]
    assert len(times) == 10 and times == sorted(times)
    assert {round(b - a, 1) for a, b in itertools.pairwise(times)} == {6.0}
    with shunter.sync.Queue(queue.name, REDIS_URL) as blocking:
        more = blocking.add_spread([{"task": "t"} for _ in range(4)], start=0, end=40,
                                   batch_id="sync-batch")
        assert [j.id for j in more] == [f"sync-batch.{i}" for i in range(4)]
    assert (await queue.counts())["scheduled"] == 14
