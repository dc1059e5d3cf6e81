"""Queue-wide settings live on the server (issue 9, item 4): the event stream's cap and the
payload cap are stored in the queue's meta hash by ``Queue.configure``, and every producer,
worker and script uses them, whatever the client was started with."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio

import shunter.sync
from shunter import BulkAddError, InvalidInput, Job, PayloadTooLarge, Queue, State

from .conftest import REDIS_URL
from .worker_support import events, settled

pytestmark = pytest.mark.redis


async def test_configure_stores_and_settings_reads(queue: Queue) -> None:
    assert await queue.settings() == {"max_events": None, "max_payload_bytes": None, "concurrency": None,
        "rate": None, "group_concurrency": None, "group_rate": None}
    stored = await queue.configure(max_payload_bytes=4096)
    assert stored == {"max_events": None, "max_payload_bytes": 4096, "concurrency": None,
        "rate": None, "group_concurrency": None, "group_rate": None}
    assert await queue.configure(max_events=500) == {"max_events": 500, "max_payload_bytes": 4096,
                                                     "concurrency": None,
        "rate": None, "group_concurrency": None, "group_rate": None}
    (configured, *_) = [e for e in await events(queue.storage) if e["event"] == "configure"][-1:]
    assert configured["max_events"] == "500" and configured["max_payload_bytes"] == "4096"


@pytest.mark.parametrize(("option", "value"), [("max_events", 5), ("max_payload_bytes", 10),
                                                ("max_events", 1.5), ("max_payload_bytes", "1k")])
async def test_configure_refuses_bad_values(queue: Queue, option: str, value: Any) -> None:
    with pytest.raises(InvalidInput, match=option):
        await queue.configure(**{option: value})
    assert await queue.settings() == {"max_events": None, "max_payload_bytes": None, "concurrency": None,
        "rate": None, "group_concurrency": None, "group_rate": None}


async def test_a_producer_started_with_a_larger_cap_cannot_store_more(queue: Queue,
                                                                      client: redis.asyncio.Redis) -> None:
    async with Queue(queue.name, REDIS_URL, max_payload_bytes=1 << 20) as early:
        await early.add("t", {"n": 0})  # it read the settings now: none stored yet
        await queue.configure(max_payload_bytes=2048)
        # its own cap says yes; the enqueue script applies the queue's
        with pytest.raises(PayloadTooLarge, match="max_payload_bytes of 2,048"):
            await early.add("t", {"blob": "x" * 4096}, job_id="too-big")
        assert not await client.exists(queue.storage.keys.job("too-big"))
        with pytest.raises(BulkAddError) as bulk:
            await early.add_bulk([{"task": "t", "data": {"n": 1}, "job_id": "fits"},
                                  {"task": "t", "data": "x" * 4096, "job_id": "does-not"}])
        assert set(bulk.value.errors) == {"does-not"}
        assert isinstance(bulk.value.errors["does-not"], PayloadTooLarge)
        assert await client.exists(queue.storage.keys.job("fits"))
    async with Queue(queue.name, REDIS_URL) as late:  # reads the stored cap before its first add
        with pytest.raises(PayloadTooLarge):
            await late.add("t", "x" * 4096)
        assert late.storage.max_payload_bytes == 2048


async def test_the_stored_stream_cap_wins(queue: Queue, client: redis.asyncio.Redis) -> None:
    await queue.configure(max_events=100)
    async with Queue(queue.name, REDIS_URL, max_events=10_000_000) as big:
        await big.add_bulk([{"task": "t", "data": i} for i in range(1000)])
    # MAXLEN ~ trims whole macro nodes: about the cap, never the 1,000 events appended
    assert await client.xlen(queue.storage.keys.events) < 300


async def test_workers_and_the_sync_producer_adopt_the_stored_caps(queue: Queue,
                                                                   start_worker: Any) -> None:
    await queue.configure(max_payload_bytes=2048)

    async def big(job: Job) -> str:
        return "y" * 4096  # over the stored cap, under the worker's own default

    job = await queue.add("big", max_attempts=1)
    start_worker({"big": big})
    done = await settled(queue, job.id)
    assert done.state is State.FAILED and done.error is not None
    assert done.error.type == "PayloadTooLarge"
    with shunter.sync.Queue(queue.name, REDIS_URL) as sync_queue:
        with pytest.raises(PayloadTooLarge):
            sync_queue.add("t", "x" * 4096)
        assert sync_queue.max_payload_bytes == 2048
