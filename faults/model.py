"""9. A model-based test: a Hypothesis state machine drives the storage layer directly, on
a real Redis, against a plain-Python model of the lifecycle.

Rules: enqueue, claim, renew, complete, fail, retry, release, abort, cancel, rescue,
advance time (wait until every 1 ms lease has run out in server time) and kill worker
(the worker forgets its tokens; they live on as zombies that may still try to commit).
After every step: each job is in exactly one state index and it matches the state in
its hash, tokens only grow, and every fenced write was accepted exactly when it carried
the job's current token and the job was active.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import redis
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from shunter.errors import JobNotInState, LeaseLost
from shunter.options import Retention
from shunter.producer import build_spec
from shunter.storage import Storage

from .checker import Report
from .harness import Env, Profile

__all__ = ["LifecycleMachine", "model_scenario"]

INDEXES = ("waiting", "scheduled", "active", "completed", "failed", "cancelled")
LONG_MS = 3_600_000
MAX_STALLS = 1
KEEP_ALL = Retention(count=None, age=None)


@dataclass
class Model:
    state: str
    token: int = 0
    stalls: int = 0
    attempts: int = 0
    cancel_requested: bool = False
    lease: str = ""  #: "long", "short" (1 ms, maybe expired) or "expired" (certainly)


@dataclass
class Stats:
    steps: Counter[str] = field(default_factory=Counter)
    examples: int = 0


STATS = Stats()


class LifecycleMachine(RuleBasedStateMachine):
    #: Set before running: the Redis the machine talks to, and the storage class under
    #: test (a deliberately broken one proves that the invariants can fail).
    url = "redis://127.0.0.1:6379/0"
    storage_class: type[Storage] = Storage

    def __init__(self) -> None:
        super().__init__()
        STATS.examples += 1
        self.loop = asyncio.new_event_loop()
        import redis.asyncio as aredis

        self.aclient = aredis.Redis.from_url(self.url, decode_responses=False)
        self.client = redis.Redis.from_url(self.url, decode_responses=False)
        self.storage = self.storage_class(self.aclient, f"model-{uuid.uuid4().hex[:10]}")
        self.jobs: dict[str, Model] = {}
        self.held: dict[int, list[tuple[str, int]]] = {0: [], 1: []}
        self.zombies: list[tuple[str, int]] = []
        self.short_until = 0  #: server ms after which every short lease has run out

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.run(self.storage.obliterate(force=True))
            self.run(self.aclient.aclose())
        finally:
            self.client.close()
            self.loop.close()

    def server_ms(self) -> int:
        sec, usec = self.client.time()
        return int(sec) * 1000 + int(usec) // 1000

    def _count(self, name: str) -> None:
        STATS.steps[name] += 1

    # -- rules -----------------------------------------------------------------------------
    @rule(delayed=st.booleans())
    def enqueue(self, delayed: bool) -> None:
        self._count("enqueue")
        job_id = f"j{len(self.jobs)}"
        spec = build_spec("t", {"n": len(self.jobs)}, job_id=job_id, delay=3600 if delayed else None,
                          max_attempts=5, keep_completed=KEEP_ALL, keep_failed=KEEP_ALL,
                          max_payload_bytes=1 << 20)
        result = self.run(self.storage.enqueue(spec))
        assert result.created and result.state is not None
        assert result.state.value == ("scheduled" if delayed else "waiting")
        self.jobs[job_id] = Model(result.state.value)

    @rule(worker=st.integers(0, 1), n=st.integers(1, 3), short=st.booleans())
    def claim(self, worker: int, n: int, short: bool) -> None:
        self._count("claim")
        waiting = {j for j, m in self.jobs.items() if m.state == "waiting"}
        result = self.run(self.storage.claim(n, 1 if short else LONG_MS, f"w{worker}"))
        got = [(f[b"id"].decode(), int(f[b"token"])) for f in result.jobs]
        assert len(got) == min(n, len(waiting)), (got, waiting)
        for job_id, token in got:
            m = self.jobs[job_id]
            assert job_id in waiting and token == m.token + 1, (job_id, token, m)
            m.state, m.token, m.lease = "active", token, "short" if short else "long"
            self.held[worker].append((job_id, token))
        if short:
            self.short_until = self.server_ms() + 2
            self.advance_time()  # a 1 ms lease is certainly over: the model stays deterministic

    @rule(worker=st.integers(0, 1), short=st.booleans())
    def renew(self, worker: int, short: bool) -> None:
        self._count("renew")
        held = self.held[worker]
        codes = self.run(self.storage.renew(1 if short else LONG_MS, held))
        for (job_id, token), code in zip(held, codes, strict=True):
            m = self.jobs[job_id]
            if token != m.token:
                assert code == -3, (job_id, code)
            elif m.state != "active":
                assert code == -2, (job_id, code)
            else:
                assert code == (2 if m.cancel_requested else 1), (job_id, code)
                m.lease = "short" if short else "long"
        if short and held:
            self.short_until = self.server_ms() + 2
            self.advance_time()

    def _fenced(self, worker: int, index: int, verb: str, target: str, zombie: bool = False) -> None:
        pool = self.zombies if zombie else self.held[worker]
        job_id, token = pool.pop(index % len(pool))
        m = self.jobs[job_id]
        s = self.storage
        calls = {"complete": lambda: s.complete(job_id, token, b"1"),
                 "fail": lambda: s.fail(job_id, token, b"{}"),
                 "retry": lambda: s.retry(job_id, token, 0 if target == "waiting" else LONG_MS, b"{}"),
                 "release": lambda: s.release(job_id, token),
                 "abort": lambda: s.abort(job_id, token)}
        expected: type[Exception] | None = None
        if token != m.token:
            expected = LeaseLost
        elif m.state != "active":
            expected = JobNotInState
        try:
            self.run(calls[verb]())
        except (LeaseLost, JobNotInState) as exc:
            assert type(exc) is expected, f"{verb} {job_id}/{token}: {exc!r}, model {m}"
            return
        assert expected is None, f"{verb} {job_id}/{token} accepted with a stale token, model {m}"
        if verb in ("retry", "release") and m.cancel_requested:
            target = "cancelled"  # a cancel asked for during the attempt wins over running it again
        m.state, m.lease = target, ""
        if verb in ("complete", "fail", "retry"):  # each counts the attempt it settles
            m.attempts += 1

    def _settle(self, worker: int, index: int, verb: str, target: str) -> None:
        """A fenced write by a live worker; one holding nothing claims a job first (so
        these rules are never starved by the swarm of other rules)."""
        self._count(f"{verb} -> {target}")
        if not self.held[worker]:
            if not any(m.state == "waiting" for m in self.jobs.values()):
                self.enqueue(False)
            self.claim(worker, 1, index % 2 == 0)
        self._fenced(worker, index, verb, target)

    @rule(worker=st.integers(0, 1), index=st.integers(0, 5))
    def complete(self, worker: int, index: int) -> None:
        self._settle(worker, index, "complete", "completed")

    @rule(worker=st.integers(0, 1), index=st.integers(0, 5))
    def fail(self, worker: int, index: int) -> None:
        self._settle(worker, index, "fail", "failed")

    @rule(worker=st.integers(0, 1), index=st.integers(0, 5), later=st.booleans())
    def retry(self, worker: int, index: int, later: bool) -> None:
        self._settle(worker, index, "retry", "scheduled" if later else "waiting")

    @rule(worker=st.integers(0, 1), index=st.integers(0, 5))
    def release(self, worker: int, index: int) -> None:
        self._settle(worker, index, "release", "waiting")

    @rule(worker=st.integers(0, 1), index=st.integers(0, 5))
    def abort(self, worker: int, index: int) -> None:
        self._settle(worker, index, "abort", "cancelled")

    @rule(index=st.integers(0, 5))
    def zombie_complete(self, index: int) -> None:
        """A killed worker's attempt tries to commit: accepted only if it still holds the
        current token of an active job (its lease was never taken over)."""
        self._count("zombie complete")
        if not self.zombies:
            self.kill_worker(0 if self.held[0] else 1)
            if not self.zombies:
                return
        self._fenced(0, index, "complete", "completed", zombie=True)

    @precondition(lambda self: bool(self.jobs))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        self._count("cancel")
        job_id = data.draw(st.sampled_from(sorted(self.jobs)))
        m = self.jobs[job_id]
        try:
            now = self.run(self.storage.cancel(job_id, "model", "test"))
        except JobNotInState:
            assert m.state in ("completed", "failed", "cancelled"), m
            return
        if m.state == "active":
            assert now is False
            m.cancel_requested = True
        else:
            assert now is True and m.state in ("waiting", "scheduled"), m
            m.state = "cancelled"

    @rule()
    def rescue(self) -> None:
        self._count("rescue")
        self.run(self.storage.rescue(MAX_STALLS, lock_ms=0))
        for job_id, m in self.jobs.items():
            if m.state != "active" or m.lease == "long":
                continue
            actual = self.client.hget(self.storage.keys.job(job_id), "state").decode()
            if m.lease == "short" and actual == "active":
                continue  # its 1 ms lease had not run out yet on the server
            m.stalls += 1
            if m.cancel_requested:
                m.state = "cancelled"
            elif m.stalls > MAX_STALLS:
                m.state, m.attempts = "failed", m.attempts + 1
            else:
                m.state = "waiting"
            m.lease = ""
            assert actual == m.state, (job_id, actual, m)

    @rule()
    def advance_time(self) -> None:
        """Wait (polling the server's clock) until every 1 ms lease has run out."""
        self._count("advance time")
        deadline = time.monotonic() + 5
        while self.server_ms() <= self.short_until:
            assert time.monotonic() < deadline, "server time does not advance"
            time.sleep(0.001)
        for m in self.jobs.values():
            if m.lease == "short":
                m.lease = "expired"

    @rule(worker=st.integers(0, 1))
    def freeze_worker(self, worker: int) -> None:
        """The worker freezes past its leases (SIGSTOP): its leases run out (their
        deadlines are moved to the past), the jobs are rescued and the other worker claims
        them; the frozen one still holds the old tokens and will try to use them."""
        self._count("freeze worker")
        if not self.held[worker]:
            if not any(m.state == "waiting" for m in self.jobs.values()):
                self.enqueue(False)
            self.claim(worker, 2, False)
        for job_id, token in self.held[worker]:  # its leases run out: time passes for them
            m = self.jobs[job_id]
            if m.state == "active" and m.token == token:
                self.client.zadd(self.storage.keys.active, {job_id: 0}, xx=True)
                m.lease = "expired"
        self.rescue()
        self.claim(1 - worker, 3, False)

    @rule(worker=st.integers(0, 1))
    def kill_worker(self, worker: int) -> None:
        self._count("kill worker")
        self.zombies += self.held[worker]
        self.held[worker] = []

    # -- invariants ------------------------------------------------------------------------
    @invariant()
    def one_index_matching_the_hash(self) -> None:
        k = self.storage.keys
        pipe = self.client.pipeline(transaction=False)
        for name in INDEXES:
            pipe.zrange(getattr(k, name), 0, -1)
        for job_id in self.jobs:
            pipe.hmget(k.job(job_id), "state", "token", "stalls", "attempts_made")
        replies = pipe.execute()
        where: dict[str, list[str]] = {}
        for name, members in zip(INDEXES, replies, strict=False):
            for member in members:
                where.setdefault(member.decode(), []).append(name)
        assert set(where) == set(self.jobs), set(where) ^ set(self.jobs)
        for (job_id, m), (state, token, stalls, attempts) in zip(
                self.jobs.items(), replies[len(INDEXES):], strict=True):
            assert where[job_id] == [state.decode()], (job_id, where[job_id], state)
            assert state.decode() == m.state, (job_id, state, m)
            assert int(token) == m.token, (job_id, token, m)  # tokens only grow, by claims
            assert (int(stalls), int(attempts)) == (m.stalls, m.attempts), (job_id, stalls, attempts, m)


def run_model(url: str, examples: int, steps: int, storage_class: type[Storage] = Storage, *,
              shrink: bool = True) -> None:
    """``shrink=False``: report the first failing example as found (a control that only
    has to be caught need not spend half a minute minimising it)."""
    LifecycleMachine.url = url
    LifecycleMachine.storage_class = storage_class
    phases = list(Phase) if shrink else [p for p in Phase if p is not Phase.shrink]
    run_state_machine_as_test(LifecycleMachine, settings=settings(
        max_examples=examples, stateful_step_count=steps, deadline=None, database=None,
        suppress_health_check=list(HealthCheck), phases=phases))


async def model_scenario(root: Path, p: Profile) -> list[Report]:
    rep = Report("9 model-based state machine (Hypothesis)")
    async with Env("model", p, root) as env:
        STATS.steps.clear()
        STATS.examples = 0
        error = ""
        try:
            await asyncio.to_thread(run_model, env.url, p.model_examples, p.model_steps)
        except Exception as exc:  # a falsifying example: Hypothesis prints the steps
            error = f"{type(exc).__name__}: {str(exc)[:300]}"
        rep.add("examples run", STATS.examples, None, f"up to {p.model_steps} steps each")
        rep.add("steps", sum(STATS.steps.values()), None,
                ", ".join(f"{k} {v}" for k, v in sorted(STATS.steps.items())))
        rep.expect("invariants held", "yes" if not error else "no", not error, error)
    return [rep]
