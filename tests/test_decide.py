"""Table-driven tests of the pure rules: ``decide()`` (what happens after an attempt) and
``Backoff`` (how long a retry waits). No server: a job is built from a dict of fields."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
import redis.asyncio

from shunter import Backoff, Decision, InvalidInput, Job, RetryAfter, UnrecoverableError
from shunter.outcome import Task, decide
from shunter.storage import Storage

_STORAGE = Storage(redis.asyncio.Redis(), "unit")  # never connects: no command is sent


def job(attempt: int = 1, max_attempts: int = 3, deferrals: int = 0,
        backoff: Backoff | None = None) -> Job:
    fields = {b"task": b"t", b"state": b"active", b"attempts_made": str(attempt - 1).encode(),
              b"max_attempts": str(max_attempts).encode(), b"deferrals": str(deferrals).encode()}
    if backoff is not None:
        fields[b"backoff"] = orjson.dumps(backoff.to_json())
    return Job(_STORAGE, "j")._load(fields)


def run(j: Job, exc: BaseException | None, result: Any = None, *, task_classify: Any = None,
        worker_classify: Any = None, task_backoff: Any = None, max_deferrals: int = 100,
        max_result_bytes: int = 1024) -> tuple[str, int, bool]:
    task = Task(lambda job: None, backoff=task_backoff, classify=task_classify)
    out = decide(j, task, exc, result, classifiers=(task.classify, worker_classify),
                 default_backoff=Backoff.fixed(7), max_deferrals=max_deferrals,
                 max_result_bytes=max_result_bytes)
    return out.kind, out.delay_ms, out.count_attempt


def classify_as(answer: Any) -> Any:
    return lambda exc, job: answer


def broken_classifier(exc: BaseException, job: Job) -> Any:
    raise RuntimeError("classifier bug")


CASES: list[tuple[str, dict[str, Any], tuple[str, int, bool]]] = [
    # (case, arguments, (kind, delay_ms, count_attempt))
    ("success completes", {"exc": None, "result": {"ok": 1}}, ("complete", 0, True)),
    ("a result that is not JSON fails", {"exc": None, "result": {1, 2}}, ("fail", 0, True)),
    ("a result over the cap fails", {"exc": None, "result": "x" * 2000}, ("fail", 0, True)),
    ("an error retries with the default backoff", {"exc": ValueError()}, ("retry", 7000, True)),
    ("the last attempt fails", {"exc": ValueError(), "attempt": 3}, ("fail", 0, True)),
    ("a single attempt fails at once", {"exc": ValueError(), "max_attempts": 1}, ("fail", 0, True)),
    ("UnrecoverableError fails with attempts left", {"exc": UnrecoverableError("no")},
     ("fail", 0, True)),
    ("UnrecoverableError beats a RETRY classifier",
     {"exc": UnrecoverableError("no"), "task_classify": classify_as(Decision.RETRY)}, ("fail", 0, True)),
    ("RetryAfter defers without an attempt", {"exc": RetryAfter(2.5)}, ("retry", 2500, False)),
    ("RetryAfter past max_deferrals counts an attempt",
     {"exc": RetryAfter(2.5), "deferrals": 100}, ("retry", 7000, True)),
    ("RetryAfter past max_deferrals on the last attempt fails",
     {"exc": RetryAfter(2.5), "deferrals": 5, "max_deferrals": 5, "attempt": 3}, ("fail", 0, True)),
    ("classifier FAIL dead-letters at once",
     {"exc": ValueError(), "worker_classify": classify_as(Decision.FAIL)}, ("fail", 0, True)),
    ("classifier RETRY on the last attempt still fails",
     {"exc": ValueError(), "attempt": 3, "task_classify": classify_as(Decision.RETRY)}, ("fail", 0, True)),
    ("classifier RetryAfter defers",
     {"exc": ValueError(), "task_classify": classify_as(RetryAfter(1))}, ("retry", 1000, False)),
    ("the task's classifier is asked before the worker's",
     {"exc": ValueError(), "task_classify": classify_as(Decision.FAIL),
      "worker_classify": classify_as(RetryAfter(1))}, ("fail", 0, True)),
    ("None from the task's classifier falls through to the worker's",
     {"exc": ValueError(), "task_classify": classify_as(None),
      "worker_classify": classify_as(Decision.FAIL)}, ("fail", 0, True)),
    ("a classifier that raises counts as None",
     {"exc": ValueError(), "task_classify": broken_classifier}, ("retry", 7000, True)),
    ("the job's backoff beats the task's",
     {"exc": ValueError(), "backoff": Backoff.fixed(3), "task_backoff": Backoff.fixed(9)},
     ("retry", 3000, True)),
    ("the task's backoff beats the worker's", {"exc": ValueError(), "task_backoff": Backoff.fixed(9)},
     ("retry", 9000, True)),
    ("a backoff function gets the attempt and the error",
     {"exc": ValueError("x"), "attempt": 2, "task_backoff": lambda n, e: n * 10 + len(str(e))},
     ("retry", 21000, True)),
    ("a backoff function that raises falls back to the worker's",
     {"exc": ValueError(), "task_backoff": lambda n, e: 1 / 0}, ("retry", 7000, True)),
    ("a negative backoff function result waits 0",
     {"exc": ValueError(), "task_backoff": lambda n, e: -5}, ("retry", 0, True)),
]


@pytest.mark.parametrize(("case", "args", "expected"), CASES, ids=[c[0] for c in CASES])
def test_decide(case: str, args: dict[str, Any], expected: tuple[str, int, bool]) -> None:
    shape = {k: args.pop(k) for k in ("attempt", "max_attempts", "deferrals", "backoff") if k in args}
    exc = args.pop("exc")
    assert run(job(**shape), exc, **args) == expected


BACKOFFS: list[tuple[Backoff, list[float]]] = [
    # (backoff, delays of attempts 1..5, without randomness)
    (Backoff.fixed(5), [5, 5, 5, 5, 5]),
    (Backoff.exponential(1, jitter=0), [1, 2, 4, 8, 16]),
    (Backoff.exponential(2, factor=3, jitter=0), [2, 6, 18, 54, 162]),
    (Backoff.exponential(10, max_delay=25, jitter=0), [10, 20, 25, 25, 25]),
    (Backoff.schedule([5, 15, 60]), [5, 15, 60, 60, 60]),
    (Backoff.fixed(0), [0, 0, 0, 0, 0]),
]


@pytest.mark.parametrize(("backoff", "delays"), BACKOFFS)
def test_backoff_delays(backoff: Backoff, delays: list[float]) -> None:
    assert [backoff.delay(n) for n in range(1, 6)] == delays
    assert Backoff.from_json(backoff.to_json()) == backoff


@pytest.mark.parametrize(("backoff", "low", "high"), [
    (Backoff.fixed(10, jitter=0.5), 5, 15),
    (Backoff.exponential(10), 5, 15),  # jittered ±50 % by default
    (Backoff.fixed(10, spread=2), 10, 12),
    (Backoff.schedule([10], jitter=0.1, spread=1), 9, 12),
])
def test_backoff_randomness_stays_in_its_band(backoff: Backoff, low: float, high: float) -> None:
    rng = random.Random(7)
    delays = [backoff.delay(1, rng) for _ in range(500)]
    assert low <= min(delays) and max(delays) <= high
    assert len(set(delays)) > 100  # really random, not one value


def test_exponential_backoff_never_overflows() -> None:
    assert Backoff.exponential(1, factor=100, jitter=0).delay(10**6) == 3600


@pytest.mark.parametrize(("build", "message"), [
    (lambda: Backoff.fixed(-1), "between 0 and 366 days"),
    (lambda: Backoff.fixed(float("nan")), "finite number"),
    (lambda: Backoff.fixed(True), "finite number"),
    (lambda: Backoff.exponential(1, factor=0.5), "factor"),
    (lambda: Backoff.exponential(1, jitter=2), "fraction"),
    (lambda: Backoff.schedule([]), "non-empty"),
    (lambda: Backoff.schedule("5,10"), "non-empty"),
    (lambda: Backoff.schedule([1] * 101), "more than 100"),
    (lambda: Backoff.from_json({"kind": "linear"}), "not a backoff"),
])
def test_bad_backoffs_are_refused(build: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        build()
