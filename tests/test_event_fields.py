"""What each event carries: enough for a job-history sink that reads only the stream.

Every event has ``event``, ``job``, ``state`` and ``seq`` (a per-queue sequence with no
gaps); the events of an attempt add its ``token``, ``attempt`` number and ``worker``;
failures add ``error_type`` and a capped ``error_message``; cancellations say ``by`` whom
and the ``reason``. :data:`FIELDS` is the table docs/lifecycle.md shows.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import redis.asyncio

from shunter import Dedup
from shunter.producer import build_spec
from shunter.states import State
from shunter.storage import JobSpec, Storage
from shunter.storage.scripts import SCRIPTS, Script

from .conftest import eventually

LEASE = 60_000
COMMON = {"event", "job", "state", "seq"}
ATTEMPT = {"token", "attempt", "worker"}
ERROR = {"error_type", "error_message"}
CANCEL = {"by", "reason"}

#: (event, state after) -> the fields besides COMMON.
FIELDS: dict[tuple[str, str], set[str]] = {
    ("enqueue", "waiting"): set(),
    ("enqueue", "scheduled"): set(),
    ("promote", "waiting"): set(),
    ("claim", "active"): ATTEMPT,
    ("progress", "active"): ATTEMPT | {"progress"},  # or progress_bytes for a large value
    ("complete", "completed"): ATTEMPT,
    ("retry", "waiting"): ATTEMPT | ERROR | {"delay_ms"},
    ("retry", "scheduled"): ATTEMPT | ERROR | {"delay_ms"},
    ("retry", "cancelled"): ATTEMPT | ERROR | CANCEL,
    ("fail", "failed"): ATTEMPT | ERROR,
    ("cancel", "cancelled"): CANCEL,
    ("cancel", "active"): CANCEL,
    ("abort", "cancelled"): ATTEMPT | CANCEL,
    ("release", "waiting"): ATTEMPT,
    ("release", "cancelled"): ATTEMPT | CANCEL,
    ("rescue", "waiting"): ATTEMPT | {"stalls"},
    ("rescue", "failed"): ATTEMPT | ERROR | {"stalls"},
    ("rescue", "cancelled"): ATTEMPT | CANCEL | {"stalls"},
    ("replay", "waiting"): set(),
    # dedup (docs/dedup.md): an add that found its key held, on the holder, in its state
    # ('' for a throttle key whose holder is gone); a debounce that updated its holder
    **{("dedup", state): {"mode", "key"} for state in (*State, "")},
    ("debounce", "waiting"): {"key"},
    ("debounce", "scheduled"): {"key"},
    # queue operations: job '' (and state '' except for clean, whose state names the set)
    ("pause", ""): set(),
    ("resume", ""): set(),
    ("drain", ""): {"count"},
    ("clean", "completed"): {"count"},
}


def spec(job_id: str, **options: Any) -> JobSpec:
    return build_spec("task", {"id": job_id}, job_id=job_id, max_payload_bytes=1 << 16, **options)


def error(kind: str, message: str) -> bytes:
    return orjson.dumps({"type": kind, "message": message, "traceback": "Traceback ...\n" * 50})


async def stream(client: redis.asyncio.Redis, storage: Storage) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in f.items()}
            for _, f in await client.xrange(storage.keys.events)]


async def claim(storage: Storage, worker: str = "w-1", lease_ms: int = LEASE) -> int:
    jobs = (await storage.claim(1, lease_ms, worker)).jobs
    assert len(jobs) == 1
    return int(jobs[0][b"token"])


async def expire(client: redis.asyncio.Redis, storage: Storage, job_id: str) -> None:
    deadline = await client.zscore(storage.keys.active, job_id)
    assert deadline is not None

    async def passed() -> bool:
        sec, usec = await client.time()
        return int(sec) * 1000 + int(usec) // 1000 > deadline

    await eventually(passed, message="lease expired")


def check(events: list[dict[str, str]]) -> None:
    """Each event has exactly its documented fields, and seq counts 1, 2, 3 ..."""
    for event in events:
        extra = set(event) - COMMON
        if event["event"] == "progress" and "progress_bytes" in extra:
            extra = extra - {"progress_bytes"} | {"progress"}
        assert extra == FIELDS[event["event"], event["state"]], event
    assert [int(e["seq"]) for e in events] == list(range(1, len(events) + 1))


# -- one job's life, event by event --------------------------------------------------------

async def test_an_attempts_events_carry_its_token_number_and_worker(
        storage: Storage, client: redis.asyncio.Redis) -> None:
    await storage.enqueue(spec("a", delay=0.001))
    await eventually(lambda: storage.promote(), message="promoted")
    token = await claim(storage, "w-1")
    await storage.progress("a", token, b'{"pct": 5}')
    await storage.progress("a", token, orjson.dumps("x" * 3000))
    await storage.retry("a", token, 0, error("Boom", "first"))  # attempt 1 counted
    token = await claim(storage, "w-2")
    await storage.retry("a", token, 0, error("RetryAfter", "later"), count_attempt=False)
    token = await claim(storage, "w-3")  # a deferral used no attempt: still attempt 2
    await storage.complete("a", token, b'"ok"')
    events = await stream(client, storage)
    check(events)
    assert [(e["event"], e["state"], e.get("token"), e.get("attempt"), e.get("worker"))
            for e in events] == [
        ("enqueue", "scheduled", None, None, None),
        ("promote", "waiting", None, None, None),
        ("claim", "active", "1", "1", "w-1"),
        ("progress", "active", "1", "1", "w-1"),
        ("progress", "active", "1", "1", "w-1"),
        ("retry", "waiting", "1", "1", "w-1"),
        ("claim", "active", "2", "2", "w-2"),
        ("retry", "waiting", "2", "2", "w-2"),
        ("claim", "active", "3", "2", "w-3"),
        ("complete", "completed", "3", "2", "w-3"),
    ]
    assert (events[3]["progress"], events[4]["progress_bytes"]) == ('{"pct": 5}', "3002")
    assert (events[5]["error_type"], events[5]["error_message"], events[5]["delay_ms"]) == (
        "Boom", "first", "0")


async def test_failures_and_cancellations_say_what_and_who(storage: Storage,
                                                           client: redis.asyncio.Redis) -> None:
    await storage.enqueue(spec("failed"))
    token = await claim(storage, "w-f")
    await storage.retry("failed", token, 60_000, error("Timeout", "slow"))  # scheduled
    await client.zadd(storage.keys.scheduled, {"failed": 0})  # due now
    token = await claim(storage, "w-f")
    await storage.fail("failed", token, error("ValueError", "bad input"))
    await storage.replay("failed")
    await storage.cancel("failed", "alice", "not needed")  # waiting: cancelled at once

    for verb in ("abort", "retry", "release"):  # each ends a cancel-requested attempt
        await storage.enqueue(spec(verb))
        token = await claim(storage, f"w-{verb}")
        await storage.cancel(verb, "bob", f"stop {verb}")  # active: flagged
        if verb == "abort":
            await storage.abort(verb, token)
        elif verb == "retry":
            await storage.retry(verb, token, 0, error("E", "m"))
        else:
            await storage.release(verb, token)
    events = await stream(client, storage)
    check(events)
    by_key = {(e["job"], e["event"], e["state"]): e for e in events}
    retried = by_key["failed", "retry", "scheduled"]
    assert (retried["error_type"], retried["error_message"], retried["delay_ms"]) == (
        "Timeout", "slow", "60000")
    failed = by_key["failed", "fail", "failed"]
    assert (failed["attempt"], failed["worker"], failed["error_type"], failed["error_message"]) == (
        "2", "w-f", "ValueError", "bad input")
    assert (by_key["failed", "cancel", "cancelled"]["by"],
            by_key["failed", "cancel", "cancelled"]["reason"]) == ("alice", "not needed")
    for verb in ("abort", "retry", "release"):
        flagged, ended = by_key[verb, "cancel", "active"], by_key[verb, verb, "cancelled"]
        assert (flagged["by"], flagged["reason"]) == ("bob", f"stop {verb}")
        assert (ended["by"], ended["reason"], ended["worker"], ended["attempt"]) == (
            "bob", f"stop {verb}", f"w-{verb}", "1")


async def test_rescue_events_name_the_stalled_attempt(storage: Storage,
                                                      client: redis.asyncio.Redis) -> None:
    # one at a time, and the one that goes back to the head of the line last
    for job_id in ("dead", "asked", "back"):
        await storage.enqueue(spec(job_id))
    for job_id in ("dead", "asked", "back"):
        await claim(storage, f"w-{job_id}", lease_ms=1)
        await expire(client, storage, job_id)
        if job_id == "asked":
            await storage.cancel(job_id, "carol", "enough")
        await storage.rescue(max_stalls=0 if job_id == "dead" else 5)
    events = await stream(client, storage)
    check(events)
    rescues = {e["job"]: e for e in events if e["event"] == "rescue"}
    assert [(j, e["state"], e["token"], e["attempt"], e["worker"], e["stalls"])
            for j, e in rescues.items()] == [
        ("dead", "failed", "1", "1", "w-dead", "1"),
        ("asked", "cancelled", "1", "1", "w-asked", "1"),
        ("back", "waiting", "1", "1", "w-back", "1")]
    assert rescues["dead"]["error_type"] == "Stalled"
    assert "max_stalls=0" in rescues["dead"]["error_message"]
    assert (rescues["asked"]["by"], rescues["asked"]["reason"]) == ("carol", "enough")


async def test_a_corrupt_job_is_failed_with_the_reason_and_no_attempt(
        storage: Storage, client: redis.asyncio.Redis) -> None:
    await client.zadd(storage.keys.waiting, {"bad": 1})
    await client.set(storage.keys.job("bad"), "foreign")
    assert (await storage.claim(5, LEASE, "w")).jobs == []
    (event,) = await stream(client, storage)
    assert set(event) == COMMON | ERROR
    assert (event["event"], event["state"], event["error_type"]) == ("fail", "failed", "DecodeError")
    assert "holds a string" in event["error_message"]


# -- the error in the event is capped; the stored one is whole ---------------------------------

@pytest.mark.parametrize("char", ["x", "é", "😀"])
async def test_a_long_error_message_is_cut_between_characters(
        storage: Storage, client: redis.asyncio.Redis, char: str) -> None:
    message = char * 4000
    await storage.enqueue(spec("a"))
    token = await claim(storage)
    await storage.fail("a", token, error("T" * 300, message))
    last = (await client.xrevrange(storage.keys.events, count=1))[0][1]
    cut = last[b"error_message"]
    assert len(cut) <= 1000 and cut.endswith("…".encode())
    assert message.startswith(cut.decode()[:-1])  # valid UTF-8, a prefix of the message
    assert len(cut) > 1000 - 3 - len(char.encode())  # as long as the limit allows
    assert len(last[b"error_type"]) <= 200
    assert orjson.loads(await client.hget(storage.keys.job("a"), "error"))["message"] == message


async def test_an_error_that_is_not_json_is_stored_and_adds_no_fields(
        storage: Storage, client: redis.asyncio.Redis) -> None:
    await storage.enqueue(spec("a"))
    token = await claim(storage)
    await storage.fail("a", token, b"plain text")
    last = (await client.xrevrange(storage.keys.events, count=1))[0][1]
    assert not {b"error_type", b"error_message"} & set(last)
    assert await client.hget(storage.keys.job("a"), "error") == b"plain text"


# -- seq: gaps are exact --------------------------------------------------------------------------

async def test_seq_counts_every_event_of_the_queue_in_batches_too(
        storage: Storage, client: redis.asyncio.Redis) -> None:
    await storage.enqueue_many([spec(f"j{i}") for i in range(450)])  # three script calls
    await storage.pause()
    await storage.resume()
    _, claimed = await storage.complete_many([], claim=10, lease_ms=LEASE, worker_id="w")
    done = [(j[b"id"].decode(), int(j[b"token"]), b"1") for j in claimed.jobs]
    # ten completions and ten claims in one call
    await storage.complete_many(done, claim=10, lease_ms=LEASE, worker_id="w")
    await storage.drain(limit=100)
    events = await stream(client, storage)
    assert [int(e["seq"]) for e in events] == list(range(1, len(events) + 1))
    assert len(events) == 450 + 2 + 10 + 10 + 10 + 5  # 430 drained in 5 calls, an event each
    check(events)


async def test_seq_shows_exactly_how_many_events_a_trimmed_stream_lost(
        storage: Storage, client: redis.asyncio.Redis) -> None:
    # the same queue, its stream capped at 10 (MAXLEN ~ drops whole stream nodes)
    small = Storage(client, storage.keys.name, max_events=10)
    for i in range(30):
        await small.enqueue_many([spec(f"{i}-{n}") for n in range(20)])
    held = [int(f[b"seq"]) for _, f in await client.xrange(small.keys.events)]
    assert held == list(range(held[0], 601))  # the newest are contiguous, up to the last
    assert held[0] > 1  # and the 'held[0] - 1' before them were trimmed


async def test_seq_starts_at_one_on_a_new_or_old_stream(storage: Storage,
                                                        client: redis.asyncio.Redis) -> None:
    # a stream whose newest entry has no seq (an older version wrote it) starts again at 1
    await client.xadd(storage.keys.events, {"event": "enqueue", "job": "old", "state": "waiting"})
    await storage.enqueue(spec("a"))
    last = (await client.xrevrange(storage.keys.events, count=1))[0][1]
    assert last[b"seq"] == b"1"
    await storage.obliterate(force=True)
    await storage.enqueue(spec("b"))
    assert [f[b"seq"] for _, f in await client.xrange(storage.keys.events)] == [b"1"]



async def test_seq_counts_on_from_the_stream_when_meta_keeps_no_count(
        storage: Storage, client: redis.asyncio.Redis) -> None:
    # a meta hash written by a version that did not keep the count: the first call reads
    # the newest entry's seq, and keeps the count from then on
    await storage.enqueue(spec("a"))
    await storage.enqueue(spec("b"))
    await client.hdel(storage.keys.meta, "event_seq")
    await storage.enqueue(spec("c"))
    assert [f[b"seq"] for _, f in await client.xrange(storage.keys.events)] == [b"1", b"2", b"3"]
    assert await client.hget(storage.keys.meta, "event_seq") == b"3"

# -- the counters a call keeps in the meta hash (keep_seq) ---------------------------------------

async def test_every_script_that_appends_events_keeps_the_count_in_meta(
        storage: Storage, client: redis.asyncio.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """The number of a queue's last event lives in its meta hash (`event_seq`): the next
    call counts on from there, so a script that appended events without writing it back
    (keep_seq) would make the next one repeat their numbers. Every script that can append
    an event runs here, each way it can end after one, and after every call the meta hash
    holds the newest event's seq."""
    ran: list[str] = []
    run = Script.run

    async def checked(self: Script, c: redis.asyncio.Redis, keys: Any, args: Any) -> Any:
        reply = await run(self, c, keys, args)
        ran.append(self.name)
        newest = await client.xrevrange(storage.keys.events, count=1)
        if await client.exists(storage.keys.meta):
            assert await client.hget(storage.keys.meta, "event_seq") == newest[0][1][b"seq"], (
                self.name, len(ran))
        return reply

    monkeypatch.setattr(Script, "run", checked)
    await storage.enqueue(spec("later", delay=0.001))
    assert not await client.exists(storage.keys.meta)  # only scheduled jobs: no meta hash
    await eventually(lambda: storage.promote(), message="promoted")  # creates it
    await storage.enqueue(spec("a"))
    token = await claim(storage)
    await storage.progress("later", token, b"1")
    await storage.retry("later", token, 60_000, error("E", "later"))  # to scheduled
    token = await claim(storage)
    await storage.retry("a", token, 0, error("E", "again"))  # back in line
    token = await claim(storage)
    await storage.cancel("a", "bob", "stop")  # still active, flagged
    await storage.retry("a", token, 0, error("E", "x"))  # the request wins: cancelled
    await storage.replay("a")
    token = await claim(storage)
    await storage.release("a", token)
    token = await claim(storage)
    await storage.cancel("a", "bob", "stop")
    await storage.release("a", token)  # cancelled
    await storage.replay("a")
    token = await claim(storage)
    await storage.cancel("a", "bob", "stop")
    await storage.abort("a", token)
    await storage.replay("a")
    token = await claim(storage)
    await storage.ratelimited("a", token, 1, "queue")  # parked 1 ms, back in line

    async def unparked() -> list[dict[bytes, bytes]]:
        return (await storage.claim(1, LEASE, "w-1")).jobs  # nothing (no event) while parked

    token = int((await eventually(unparked, message="the 1 ms park ended"))[0][b"token"])
    await storage.cancel("a", "bob", "stop")
    await storage.abort("a", token)
    await storage.replay("a")
    token = await claim(storage)
    await storage.fail("a", token, error("E", "no"))
    await storage.replay("a")
    await claim(storage, lease_ms=1)
    await expire(client, storage, "a")
    await storage.rescue(max_stalls=5)
    token = await claim(storage)
    await storage.complete_many([("a", token, b"1")], claim=1, lease_ms=LEASE, worker_id="w")
    await storage.enqueue(spec("b"))
    await storage.cancel("b", "bob", "stop")  # waiting: cancelled at once
    await storage.pause()
    await storage.resume()
    await storage.configure(["max_events", "500"])
    await storage.configure_group("g", ["paused", "1"])
    await storage.enqueue(spec("c"))
    await storage.enqueue(spec("d1", dedup=Dedup.unique("k")))
    await storage.enqueue(spec("d2", dedup=Dedup.unique("k")))  # a hit: event dedup
    await storage.enqueue(spec("e1", dedup=Dedup.debounce("e"), delay=60))
    await storage.enqueue(spec("e2", dedup=Dedup.debounce("e")))  # scheduled -> waiting
    await storage.enqueue(spec("e3", dedup=Dedup.debounce("e")))  # stays waiting
    await storage.drain()
    await storage.clean(State.COMPLETED, 0)
    emitting = {name for name, script in SCRIPTS.items() if "emit" in script.helpers}
    assert set(ran) >= emitting
    events = await stream(client, storage)
    assert [int(e["seq"]) for e in events] == list(range(1, len(events) + 1))
    dedup = [e for e in events if e["event"] in ("dedup", "debounce")]
    assert [(e["event"], e["state"]) for e in dedup] == [
        ("dedup", "waiting"), ("debounce", "waiting"), ("debounce", "waiting")]
    assert all(set(e) - COMMON == FIELDS[e["event"], e["state"]] for e in dedup)
    # the waiting line's sequence is kept the same way: 12 times put at the back of a line
    assert await client.hget(storage.keys.meta, "seq") == b"12"
