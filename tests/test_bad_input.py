"""Bad producer input (RELIABILITY.md): every case raises a clear, typed error
(InvalidInput / PayloadTooLarge, both ValueError) and writes nothing."""

from __future__ import annotations

import datetime as dt
import decimal
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio

from shunter import Backoff, InvalidInput, PayloadTooLarge, Queue, QueueEvents, Retention, Worker
from shunter import sync as shunter_sync

from .conftest import REDIS_URL

pytestmark = pytest.mark.redis

DAY = 86400


async def keyspace(client: redis.asyncio.Redis, queue: Queue) -> list[bytes]:
    return sorted([k async for k in client.scan_iter(match=queue.storage.keys.prefix + "*")])


@pytest.fixture
async def untouched(queue: Queue, client: redis.asyncio.Redis) -> AsyncIterator[Queue]:
    """The queue; after the test, its keyspace must still be empty."""
    yield queue
    assert await keyspace(client, queue) == []


async def rejected(queue: Queue, error: type[Exception] = InvalidInput, match: str | None = None,
                   *args: Any, **options: Any) -> InvalidInput:
    with pytest.raises(error, match=match) as info:
        await queue.add(*(args or ("t",)), **options)
    assert isinstance(info.value, ValueError) and isinstance(info.value, InvalidInput)
    return info.value


# -- payloads ---------------------------------------------------------------------------------

async def test_payload_too_large(queue_name: str, client: redis.asyncio.Redis) -> None:
    async with Queue(queue_name, REDIS_URL, max_payload_bytes=1024) as queue:
        exact = "x" * 1022  # '"' + 1022 + '"' = 1024 bytes of JSON: at the limit is fine
        await queue.add("t", exact, job_id="fits")
        before = await keyspace(client, queue)
        err = await rejected(queue, PayloadTooLarge, "1025 bytes", "t", exact + "x")
        assert "1024" in str(err)
        await rejected(queue, PayloadTooLarge, None, "t", {"k": ["y" * 5000]})
        with pytest.raises(PayloadTooLarge):
            await queue.add_bulk([{"task": "t", "data": 1}, {"task": "t", "data": "z" * 2000}])
        assert await keyspace(client, queue) == before
        assert (await queue.counts())["waiting"] == 1
        await queue.obliterate(force=True)


async def test_default_payload_cap(untouched: Queue) -> None:
    await rejected(untouched, PayloadTooLarge, "524288", "t", "x" * (512 * 1024))


def _nest(depth: int, inner: Any = 1, kind: str = "list") -> Any:
    value = inner
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


@pytest.mark.parametrize("kind", ["list", "dict"])
async def test_payload_too_deep(untouched: Queue, kind: str) -> None:
    await rejected(untouched, InvalidInput, "not JSON-serializable", "t", _nest(1000, kind=kind))


class Reducible:
    def __reduce__(self) -> Any:
        return (print, ("pwned",))


class Plain:
    pass


@pytest.mark.parametrize("value", [
    dt.datetime(2024, 1, 1, tzinfo=dt.UTC), dt.date(2024, 1, 1), dt.time(12, 0), b"bytes",
    bytearray(b"x"), {1, 2}, frozenset({1}), Reducible(), Plain(), decimal.Decimal("1.5"),
    complex(1, 2), print, object(), type("StrSub", (str,), {})("sub"),
], ids=lambda v: type(v).__name__)
@pytest.mark.parametrize("where", ["top", "nested"])
async def test_payload_not_json(untouched: Queue, value: Any, where: str) -> None:
    data = value if where == "top" else {"a": [1, {"b": (2, value)}]}
    err = await rejected(untouched, InvalidInput, "not JSON-serializable", "t", data)
    assert not isinstance(err, PayloadTooLarge)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("wrap", [
    lambda v: v, lambda v: [1, v], lambda v: {"a": {"b": [None, v]}}, lambda v: (v,),
    lambda v: _nest(200, {"x": [v]}),
], ids=["top", "list", "dict", "tuple", "deep"])
async def test_payload_non_finite(untouched: Queue, value: float, wrap: Any) -> None:
    await rejected(untouched, InvalidInput, "NaN or Infinity", "t", wrap(value))


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, 10**30, [1, {"n": 2**100}]],
                         ids=["2^64", "-2^63-1", "1e30", "nested"])
async def test_payload_huge_int(untouched: Queue, value: Any) -> None:
    await rejected(untouched, InvalidInput, "not JSON-serializable", "t", value)


async def test_payload_64bit_ints_round_trip(queue: Queue) -> None:
    data = [2**63 - 1, -(2**63), 0, None, "", [], {}]
    job = await queue.add("t", data)
    assert (await queue.get_job(job.id)).data == data


@pytest.mark.parametrize("value", [{1: "a"}, {None: 1}, {(1, 2): 1}, {b"k": 1}, {1.5: 1},
                                   {"ok": [{"nested": {2: 3}}]}],
                         ids=["int", "None", "tuple", "bytes", "float", "nested"])
async def test_payload_non_str_keys(untouched: Queue, value: Any) -> None:
    await rejected(untouched, InvalidInput, "not JSON-serializable", "t", value)


# -- names and ids ----------------------------------------------------------------------------

BAD_NAMES = ["", "x" * 10 * 1024, "a{b", "a}b", "{tag}", "a:b", "a*b", "*", "a\nb", "abc\n",
             "a b", " ", "\x1b[31mred", "<script>alert(1)</script>", "a\tb", "a\x00b", "é",
             "a?b", "a[b]"]
NAME_IDS = ["empty", "10KiB", "lbrace", "rbrace", "tag", "colon", "star", "glob", "newline",
            "trailing-nl", "space", "blank", "ansi", "script", "tab", "nul", "accent", "question",
            "brackets"]


@pytest.mark.parametrize("job_id", BAD_NAMES, ids=NAME_IDS)
async def test_bad_job_id(untouched: Queue, job_id: str) -> None:
    err = await rejected(untouched, InvalidInput, "job id", "t", job_id=job_id)
    message = str(err)
    assert "\x1b" not in message and "\n" not in message and "\x00" not in message
    assert len(message) < 400  # the 10 KiB id is shown cut short
    for call in (untouched.get_job(job_id), untouched.cancel(job_id), untouched.replay(job_id)):
        with pytest.raises(InvalidInput, match="job id"):
            await call
    with pytest.raises(InvalidInput, match="job id"):
        await untouched.add_bulk([{"task": "t", "job_id": "fine"}, {"task": "t", "job_id": job_id}])


async def test_job_id_length_limit(queue: Queue) -> None:
    assert (await queue.add("t", job_id="a" * 128)).id == "a" * 128
    with pytest.raises(InvalidInput):
        await queue.add("t", job_id="a" * 129)
    assert (await queue.counts())["waiting"] == 1


@pytest.mark.parametrize("job_id", [123, 1.5, b"abc", ["a"], True, object()],
                         ids=["int", "float", "bytes", "list", "bool", "object"])
async def test_non_str_job_id(untouched: Queue, job_id: Any) -> None:
    await rejected(untouched, InvalidInput, "job id must be a str", "t", job_id=job_id)
    with pytest.raises(InvalidInput):
        await untouched.get_job(job_id)


@pytest.mark.parametrize("name", [*BAD_NAMES, "x" * 101, ".hidden", "-dash", None, 5, b"q"],
                         ids=[*NAME_IDS, "101", "dot", "dash", "None", "int", "bytes"])
def test_bad_queue_name(name: Any) -> None:
    async def noop(job: Any) -> None:
        return None

    for make in (lambda: Queue(name, REDIS_URL), lambda: shunter_sync.Queue(name, REDIS_URL),
                 lambda: Worker(name, {"t": noop}, REDIS_URL), lambda: QueueEvents(name, REDIS_URL)):
        with pytest.raises(InvalidInput, match="queue name") as info:
            make()
        assert isinstance(info.value, ValueError) and "\x1b" not in str(info.value)


@pytest.mark.parametrize(("option", "value", "rule"), [
    ("max_events", 99, "from 100 to 10,000,000"),
    ("max_events", 10_000_001, "from 100 to 10,000,000"),
    ("max_events", 1000.0, "must be an int"),
    ("max_events", True, "must be an int"),
    ("max_events", "1000", "must be an int"),
    ("max_payload_bytes", 1023, "from 1,024 to 67,108,864"),
    ("max_payload_bytes", 64 * 1024 * 1024 + 1, "from 1,024 to 67,108,864"),
    ("max_payload_bytes", 0, "from 1,024"),
    ("max_payload_bytes", None, "must be an int"),
])
def test_bad_limits(option: str, value: Any, rule: str) -> None:
    # The same rule for both producers (storage.validate_limits, which Worker uses too).
    def worker(name: str, url: str, **kw: Any) -> Worker:
        return Worker(name, {"t": lambda job: None}, url, **kw)

    for make in (Queue, shunter_sync.Queue, worker):
        with pytest.raises(InvalidInput, match=f"^{option} .*{rule}"):
            make("q", REDIS_URL, **{option: value})


@pytest.mark.parametrize("limits", [{"max_events": 100, "max_payload_bytes": 1024},
                                    {"max_events": 10_000_000, "max_payload_bytes": 64 << 20}])
async def test_limits_are_inclusive(limits: dict[str, int]) -> None:
    async with Queue("q", REDIS_URL, **limits) as queue:
        assert (queue.storage.max_events, queue.storage.max_payload_bytes) == (
            limits["max_events"], limits["max_payload_bytes"])
    with shunter_sync.Queue("q", REDIS_URL, **limits) as sq:
        assert (sq.max_events, sq.max_payload_bytes) == (
            limits["max_events"], limits["max_payload_bytes"])


@pytest.mark.parametrize("task", ["", "1abc", "has space", "a:b", "a{b}", "x" * 201, "\x1b[31m",
                                  "<script>", None, 5],
                         ids=["empty", "digit", "space", "colon", "braces", "long", "ansi",
                              "script", "None", "int"])
async def test_bad_task_name(untouched: Queue, task: Any) -> None:
    await rejected(untouched, InvalidInput, "task name", task)


# -- times ------------------------------------------------------------------------------------

@pytest.mark.parametrize("delay", [-1, -0.001, math.nan, math.inf, -math.inf, 366 * DAY + 1,
                                   10**12, True, "5", [1]],
                         ids=["neg", "tiny-neg", "nan", "inf", "-inf", "366d+1", "huge", "bool",
                              "str", "list"])
async def test_bad_delay(untouched: Queue, delay: Any) -> None:
    await rejected(untouched, InvalidInput, "delay", delay=delay)


async def test_delay_limit_is_366_days(queue: Queue) -> None:
    job = await queue.add("t", delay=366 * DAY)
    assert job.state == "scheduled"


async def test_delay_and_run_at_together(untouched: Queue) -> None:
    await rejected(untouched, InvalidInput, "not both", delay=5,
                   run_at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1))


@pytest.mark.parametrize("run_at", [
    dt.datetime.now() + dt.timedelta(minutes=5),  # naive on purpose
    dt.datetime.now(dt.UTC) + dt.timedelta(days=367),
    dt.datetime(9999, 12, 31, tzinfo=dt.UTC),
    dt.date.today() + dt.timedelta(days=1),
    1_900_000_000, "2030-01-01T00:00:00Z",
], ids=["naive", "367d", "year9999", "date", "timestamp", "str"])
async def test_bad_run_at(untouched: Queue, run_at: Any) -> None:
    await rejected(untouched, InvalidInput, "run_at", run_at=run_at)


# -- numbers ----------------------------------------------------------------------------------

@pytest.mark.parametrize("priority", [1001, -1001, 10**9, 1.0, 1.5, True, False, "1"],
                         ids=str)
async def test_bad_priority(untouched: Queue, priority: Any) -> None:
    await rejected(untouched, InvalidInput, "priority", priority=priority)


@pytest.mark.parametrize("max_attempts", [0, -1, 1001, 1.0, 2.5, True, "3"], ids=str)
async def test_bad_max_attempts(untouched: Queue, max_attempts: Any) -> None:
    await rejected(untouched, InvalidInput, "max_attempts", max_attempts=max_attempts)


async def test_attempts_is_not_an_option(untouched: Queue) -> None:
    """One name for the attempt limit, on add and on the job: ``max_attempts``."""
    with pytest.raises(TypeError, match="unexpected keyword argument 'attempts'"):
        await untouched.add("t", attempts=3)  # type: ignore[call-arg]
    with pytest.raises(InvalidInput, match=r"unknown add_bulk option\(s\): attempts$"):
        await untouched.add_bulk([{"task": "t", "attempts": 3}])


@pytest.mark.parametrize("timeout", [0, -1, math.nan, math.inf, 7 * DAY + 1, True, "10"], ids=str)
async def test_bad_timeout(untouched: Queue, timeout: Any) -> None:
    await rejected(untouched, InvalidInput, "timeout", timeout=timeout)


async def test_number_limits_are_inclusive(queue: Queue) -> None:
    await queue.add("t", priority=1000, max_attempts=1000, timeout=7 * DAY)
    await queue.add("t", priority=-1000, max_attempts=1, timeout=0.001)
    assert (await queue.counts())["waiting"] == 2


# -- options objects ----------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: Backoff.fixed(-1), lambda: Backoff.fixed(math.nan), lambda: Backoff.fixed(math.inf),
    lambda: Backoff.fixed(367 * DAY), lambda: Backoff.fixed(True),
    lambda: Backoff.fixed(1, jitter=1.1), lambda: Backoff.fixed(1, jitter=-0.1),
    lambda: Backoff.fixed(1, spread=-1), lambda: Backoff.exponential(-5),
    lambda: Backoff.exponential(1, factor=0.5), lambda: Backoff.exponential(1, factor=1000),
    lambda: Backoff.exponential(1, factor=True), lambda: Backoff.exponential(1, max_delay=-1),
    lambda: Backoff.exponential(1, jitter=2), lambda: Backoff.schedule([]),
    lambda: Backoff.schedule([1, -1]), lambda: Backoff.schedule("123"),
    lambda: Backoff.schedule([1] * 101), lambda: Backoff.schedule([1, math.nan]),
    lambda: Backoff.schedule(5),
], ids=["neg", "nan", "inf", "367d", "bool", "jitter>1", "jitter<0", "spread<0", "exp-neg",
        "factor<1", "factor>100", "factor-bool", "max<0", "exp-jitter", "empty", "sched-neg",
        "str", "101", "sched-nan", "int"])
def test_bad_backoff(make: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        make()
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("backoff", [lambda attempt, exc: 5.0, 5, {"kind": "fixed", "delays": [1]}],
                         ids=["callable", "int", "dict"])
async def test_add_rejects_non_backoff(untouched: Queue, backoff: Any) -> None:
    err = await rejected(untouched, InvalidInput, "backoff must be a Backoff", backoff=backoff)
    assert "Task" in str(err)  # explains where a callable backoff belongs


@pytest.mark.parametrize("make", [
    lambda: Retention(count=-1), lambda: Retention(count=1.5), lambda: Retention(count=True),
    lambda: Retention(count="10"), lambda: Retention(age=-1), lambda: Retention(age=math.nan),
    lambda: Retention(age=math.inf), lambda: Retention(age=True), lambda: Retention(age="1"),
], ids=["count<0", "count-float", "count-bool", "count-str", "age<0", "age-nan", "age-inf",
        "age-bool", "age-str"])
def test_bad_retention(make: Any) -> None:
    with pytest.raises(InvalidInput):
        make()


@pytest.mark.parametrize("value", [-1, 1.5, True, "10", None, {"count": 1}], ids=str)
@pytest.mark.parametrize("option", ["keep_completed", "keep_failed"])
async def test_add_rejects_bad_keep(untouched: Queue, option: str, value: Any) -> None:
    await rejected(untouched, InvalidInput, "retention|keep_", **{option: value})


async def test_unknown_option_is_a_type_error(untouched: Queue) -> None:
    with pytest.raises(TypeError):
        await untouched.add("t", colour="red")  # type: ignore[call-arg]


async def test_bad_input_after_good_changes_nothing(queue: Queue, client: redis.asyncio.Redis) -> None:
    await queue.add("t", {"a": 1}, job_id="good")
    before = (await keyspace(client, queue), await client.xlen(queue.storage.keys.events),
              await client.hgetall(queue.storage.keys.job("good")), await queue.counts())
    for options in ({"data": math.nan}, {"job_id": "bad id"}, {"priority": 5000},
                    {"job_id": "good", "delay": -1}, {"data": {1: 2}, "job_id": "good"}):
        with pytest.raises(InvalidInput):
            await queue.add("t", **options)
    after = (await keyspace(client, queue), await client.xlen(queue.storage.keys.events),
             await client.hgetall(queue.storage.keys.job("good")), await queue.counts())
    assert after == before


@pytest.mark.redis
async def test_none_means_the_default_priority_and_attempts(queue: Queue) -> None:
    """None for priority or max_attempts means "the task's, else the default" (0 and 3)."""
    job = await queue.add("t", priority=None, max_attempts=None)
    assert (job.priority, job.max_attempts) == (0, 3)
