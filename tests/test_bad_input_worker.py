"""Bad input that reaches the worker (RELIABILITY.md): unregistered or dangerous task names,
job hashes corrupted or written by hand straight into Redis, and handlers that return
what cannot be stored, raise unprintable exceptions or call sys.exit. Each ends as a
failed job with a clear error; nothing is executed that should not be, and the worker
keeps processing the other jobs."""

from __future__ import annotations

import os
import pickle
import sys
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio

from shunter import Backoff, Job, Queue, State

from .conftest import burst

pytestmark = pytest.mark.redis


class Recorder:
    """A handler that counts its calls."""

    def __init__(self, result: Any = "ok") -> None:
        self.calls: list[str] = []
        self.result = result

    async def __call__(self, job: Job) -> Any:
        self.calls.append(job.id)
        return self.result


async def final(queue: Queue, job_id: str) -> Job:
    job = await queue.get_job(job_id)
    assert job.finished, f"{job_id} is {job.state}"
    return job


# -- task names -------------------------------------------------------------------------------

@pytest.mark.parametrize("task", ["os.system", "no_such_task", "this", "builtins.eval",
                                  "subprocess.run"])
async def test_unregistered_task_fails_and_imports_nothing(
        queue: Queue, task: str, monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[Any] = []
    monkeypatch.setattr(os, "system", lambda *a: called.append(a) or 0)
    imported_before = set(sys.modules)
    good = Recorder()
    bad = await queue.add(task, "echo pwned", max_attempts=5)
    fine = await queue.add("good")
    await burst(queue, {"good": good})
    job = await final(queue, bad.id)
    assert job.state is State.FAILED
    assert job.error is not None and job.error.type == "UnregisteredTask"
    assert repr(task) in job.error.message
    assert job.attempts_made == 1  # not retried: no worker of this queue can run it
    assert called == []
    assert "this" not in set(sys.modules) - imported_before
    assert good.calls == [fine.id]


# -- corrupted jobs written straight into Redis -------------------------------------------------

CORRUPT_DATA = {
    "pickle": pickle.dumps(object()),
    "pickle-dict": pickle.dumps({"a": 1}),
    "garbage": b"\x80\x04garbage",
    "truncated": b'{"a": [1, 2',
    "not-utf8": b'"\xff\xfe"',
}


async def test_corrupted_hashes_fail_with_decode_error(queue: Queue, client: redis.asyncio.Redis) -> None:
    k = queue.storage.keys
    good = Recorder()
    ids = []
    # good and corrupted jobs interleaved in the same waiting index
    for i, (name, raw) in enumerate(CORRUPT_DATA.items()):
        ids.append((await queue.add("good", job_id=f"ok-{i}")).id)
        await queue.add("good", job_id=f"bad-{name}", max_attempts=5)
        await client.hset(k.job(f"bad-{name}"), "data", raw)
    await queue.add("good", job_id="bad-no-task")
    await client.hdel(k.job("bad-no-task"), "task")
    await queue.add("good", job_id="bad-backoff", backoff=Backoff.fixed(1))
    await client.hset(k.job("bad-backoff"), "backoff", b"\x80\x04")
    ids.append((await queue.add("good", job_id="ok-last")).id)

    await burst(queue, {"good": good})

    assert sorted(good.calls) == sorted(ids)  # the good ones ran, once each
    for job_id in [f"bad-{n}" for n in CORRUPT_DATA] + ["bad-no-task", "bad-backoff"]:
        job = await final(queue, job_id)
        assert job.state is State.FAILED, job_id
        assert job.error is not None and job.error.type == "DecodeError", (job_id, job.error)
        assert "not run" in job.error.message
    counts = await queue.counts()
    assert (counts["completed"], counts["failed"], counts["active"], counts["waiting"]) == (
        len(ids), len(CORRUPT_DATA) + 2, 0, 0)


async def test_hand_written_hashes(queue: Queue, client: redis.asyncio.Redis) -> None:
    """Jobs written by another tool, without the fields shunter's enqueue adds."""
    k = queue.storage.keys
    good = Recorder("done")
    # a hash with no 'id', 'token' or 'created_at' but valid task and data runs normally
    await client.hset(k.job("foreign"), mapping={"task": "good", "data": b'{"x": 1}',
                                                 "state": "waiting"})
    # pickle bytes, a hash with no task, and a token that is not a number: failed, never run
    await client.hset(k.job("pickled"), mapping={"task": "good", "state": "waiting",
                                                 "data": pickle.dumps(object())})
    await client.hset(k.job("no-task"), mapping={"state": "waiting", "data": b"1"})
    await client.hset(k.job("bad-token"), mapping={"task": "good", "state": "waiting",
                                                   "data": b"1", "token": "x"})
    for i, job_id in enumerate(["foreign", "pickled", "no-task", "bad-token"]):
        await client.zadd(k.waiting, {job_id: i})
    await queue.add("good", job_id="after")

    await burst(queue, {"good": good})

    assert sorted(good.calls) == ["after", "foreign"]
    assert (await final(queue, "foreign")).result == "done"
    for job_id in ("pickled", "no-task", "bad-token"):
        job = await final(queue, job_id)
        assert job.state is State.FAILED
        assert job.error is not None and job.error.type == "DecodeError", (job_id, job.error)
    assert await queue.job_ids("active") == []


@pytest.mark.parametrize("kind", ["string", "list", "set"])
async def test_job_key_that_is_not_a_hash(queue: Queue, client: redis.asyncio.Redis, kind: str) -> None:
    """Foreign data under a job key must not kill the worker or strand the jobs claimed
    with it (Redis does not roll back a script that errors half-way)."""
    k = queue.storage.keys
    good = Recorder()
    await queue.add("good", job_id="before")
    key = k.job("alien")
    if kind == "string":
        await client.set(key, pickle.dumps(object()))
    elif kind == "list":
        await client.rpush(key, b"a", b"b")
    else:
        await client.sadd(key, b"a")
    await client.zadd(k.waiting, {"alien": 0})  # first in line
    await queue.add("good", job_id="after")

    await burst(queue, {"good": good})

    assert sorted(good.calls) == ["after", "before"]
    job = await final(queue, "alien")
    assert job.state is State.FAILED
    assert job.error is not None and job.error.type == "DecodeError" and kind in job.error.message
    assert await queue.job_ids("failed") == ["alien"]
    await queue.obliterate()
    assert [x async for x in client.scan_iter(match=k.prefix + "*")] == []


async def test_hash_whose_state_disagrees_with_index(queue: Queue, client: redis.asyncio.Redis) -> None:
    k = queue.storage.keys
    good = Recorder()
    await queue.add("good", job_id="odd")
    await client.hset(k.job("odd"), "state", "completed")
    await burst(queue, {"good": good})
    assert good.calls == []
    job = await final(queue, "odd")
    assert job.state is State.FAILED and job.error is not None and job.error.type == "CorruptJob"


# -- handler results ----------------------------------------------------------------------------

def _circular() -> list[Any]:
    loop: list[Any] = [1]
    loop.append(loop)
    return loop


@pytest.mark.parametrize("result,kind", [
    ({1, 2}, "InvalidInput"), (datetime.now(UTC), "InvalidInput"), (_circular(), "InvalidInput"),
    (float("nan"), "InvalidInput"), ({"n": 2**70}, "InvalidInput"), (b"raw", "InvalidInput"),
    ("x" * 5000, "PayloadTooLarge"),
], ids=["set", "datetime", "circular", "nan", "bigint", "bytes", "too-large"])
async def test_unstorable_result_fails_cleanly(queue: Queue, result: Any, kind: str) -> None:
    handler = Recorder(result)
    job = await queue.add("t", max_attempts=3, backoff=Backoff.fixed(0))
    after = await queue.add("t2")
    ok = Recorder(["fine"])
    await burst(queue, {"t": handler, "t2": ok}, max_payload_bytes=1024)
    got = await final(queue, job.id)
    assert got.state is State.FAILED and got.result is None
    assert got.error is not None and got.error.type == kind
    assert "result" in got.error.message
    assert handler.calls == [job.id]  # the same result would come again: no retry
    assert (await final(queue, after.id)).result == ["fine"]


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_exception_whose_str_raises(queue: Queue, sync: bool) -> None:
    calls: list[int] = []

    def raise_it(job: Job) -> None:
        calls.append(job.attempt)
        raise Unprintable()

    async def raise_async(job: Job) -> None:
        raise_it(job)

    job = await queue.add("t", max_attempts=2, backoff=Backoff.fixed(0))
    after = await queue.add("ok")
    await burst(queue, {"t": raise_it if sync else raise_async, "ok": Recorder()})
    got = await final(queue, job.id)
    assert calls == [1, 2]  # retried, then failed
    assert got.state is State.FAILED and got.attempts_made == 2
    assert got.error is not None and got.error.type == "Unprintable"
    assert got.error.message == "<unprintable Unprintable>"
    assert (await final(queue, after.id)).state is State.COMPLETED


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
@pytest.mark.parametrize("exit_with", [lambda: sys.exit(3), lambda: (_ for _ in ()).throw(KeyboardInterrupt)],
                         ids=["sys.exit", "KeyboardInterrupt"])
async def test_handler_calling_sys_exit(queue: Queue, sync: bool, exit_with: Any) -> None:
    calls: list[str] = []

    def leave(job: Job) -> None:
        calls.append(job.id)
        exit_with()

    async def leave_async(job: Job) -> None:
        leave(job)

    job = await queue.add("t", max_attempts=1)
    after = await queue.add("ok")
    worker = await burst(queue, {"t": leave if sync else leave_async, "ok": Recorder()},
                         concurrency=1)
    assert calls == [job.id]
    got = await final(queue, job.id)
    assert got.state is State.FAILED
    assert got.error is not None and got.error.type == "HandlerExit", got.error
    assert "SystemExit" in got.error.message or "KeyboardInterrupt" in got.error.message
    # the worker survived and went on to the next job
    assert (await final(queue, after.id)).state is State.COMPLETED
    assert worker.counters["completed"] == 1 and worker.counters["failed"] == 1
