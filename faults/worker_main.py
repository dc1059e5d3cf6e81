"""A real shunter worker process for the fault suite::

    python -m faults.worker_main --queue Q --redis URL --ledger PATH --lease 2 --concurrency 8

Its handlers write every execution start and end to the ledger (job id, attempt token,
attempt number, pid), and a thin wrapper around the worker's fenced storage calls records
whether each commit was accepted or refused by the fencing token. The harness starts,
signals (SIGKILL, SIGTERM, SIGSTOP, SIGCONT) and stops these processes by pid.

``--mode`` picks the handler set: ``normal`` (work, flaky, block_sleep, block_spin) or
``poison`` (adds kill_self, always_raise, hang, hang_sync, bad_result).

Each process records itself in the ledger (pid, worker name ``faults-<pid>``, lease), so
the checker can tie an attempt to the process that ran it and to the faults injected there.

Control knobs, not a public API, each bringing back a bug the suite must catch:

- ``SHUNTER_FAULTS_RENEW_ON_LOOP=1``: the lease keeper thread no longer renews leases
  itself but schedules each renewal on the event loop, as a naive worker would. A handler
  that blocks the loop then loses its lease (the blocked-loop control).
- ``SHUNTER_FAULTS_ATTEMPTS_BY_JOB=1``: the worker's running attempts and the lease
  keeper's held leases are keyed by job id, dropping the fencing token (issue 8). A worker
  frozen past its lease that claims the same job again on waking then runs it twice at
  once and the first attempt's end drops the second one's lease (the SIGSTOP control). It
  patches ``Slots.attempt_key`` and ``LeaseKeeper.held_key``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import ResponseError

from shunter import Job, Task, Worker
from shunter.errors import JobNotInState, LeaseLost
from shunter.worker.lease import LeaseKeeper
from shunter.worker.slots import Slots

from .ledger import Ledger

RENEW_ON_LOOP_ENV = "SHUNTER_FAULTS_RENEW_ON_LOOP"
ATTEMPTS_BY_JOB_ENV = "SHUNTER_FAULTS_ATTEMPTS_BY_JOB"
FENCED_VERBS = ("complete", "retry", "fail", "abort", "release")


def _renew_on_loop(self: LeaseKeeper) -> None:
    """Replacement for ``LeaseKeeper.run``: the renewal itself runs on the event loop."""

    def tick() -> None:
        try:
            self.tick()
        except Exception as exc:
            logging.getLogger("faults").warning("renewal on the loop failed: %s", exc)

    while not self._halt.wait(self.interval):
        try:
            self.loop.call_soon_threadsafe(tick)
        except RuntimeError:
            break
    self.storage.close()


def key_attempts_by_job() -> list[str]:
    """The issue-8 bug, for the control: attempts keyed by job id, token dropped. Returns
    what it patched."""
    Slots.attempt_key = staticmethod(  # type: ignore[method-assign]
        lambda queue, job_id, token: (queue, job_id, 0))
    LeaseKeeper.held_key = staticmethod(  # type: ignore[method-assign]
        lambda queue, job_id, token: (queue, job_id, 0))
    return ["Slots.attempt_key", "LeaseKeeper.held_key"]


def handlers(ledger: Ledger, queue: str, mode: str) -> dict[str, Any]:
    def recorded(fn: Callable[[Job], Awaitable[Any]],
                 returned: str = "return") -> Callable[[Job], Awaitable[Any]]:
        """``returned``: the ledger's outcome when the handler returns. "return" means it
        succeeded (the checker's outcome check: such a job never ends failed)."""
        async def run(job: Job) -> Any:
            ledger.execution(queue, job.id, job.token or 0, job.attempt, "start")
            try:
                result = await fn(job)
            except BaseException as exc:
                ledger.execution(queue, job.id, job.token or 0, job.attempt, "end",
                                 type(exc).__name__)
                raise
            ledger.execution(queue, job.id, job.token or 0, job.attempt, "end", returned)
            return result
        return run

    def data(job: Job, key: str, default: float) -> float:
        return float(job.data.get(key, default)) if isinstance(job.data, dict) else default

    async def work(job: Job) -> Any:
        await asyncio.sleep(data(job, "ms", 0) / 1000)
        return {"n": job.data.get("n") if isinstance(job.data, dict) else None}

    async def flaky(job: Job) -> Any:
        if job.attempt < data(job, "succeed_on", 3):
            raise RuntimeError(f"flaky failure on attempt {job.attempt}")
        return "ok"

    async def block_sleep(job: Job) -> Any:
        time.sleep(data(job, "s", 1))  # blocks the event loop on purpose
        return "slept"

    async def block_spin(job: Job) -> Any:
        end = time.monotonic() + data(job, "s", 1)
        n = 0
        while time.monotonic() < end:  # burns the CPU and the loop on purpose
            n += 1
        return n

    tasks: dict[str, Any] = {name: recorded(fn) for name, fn in (
        ("work", work), ("flaky", flaky), ("block_sleep", block_sleep), ("block_spin", block_spin))}
    if mode == "poison":
        async def kill_self(job: Job) -> Any:
            # an injected fault like the harness's SIGKILL: it explains the rescue
            ledger.harness("SIGKILL", os.getpid(), f"{queue}: kill_self")
            os.kill(os.getpid(), signal.SIGKILL)

        async def always_raise(job: Job) -> Any:
            raise ValueError(f"poison attempt {job.attempt}")

        async def hang(job: Job) -> Any:
            await asyncio.Event().wait()

        async def bad_result(job: Job) -> Any:
            return {"when": datetime.now(UTC)}  # not JSON

        def hang_sync(job: Job) -> Any:
            ledger.execution(queue, job.id, job.token or 0, job.attempt, "start")
            while True:  # never returns and ignores job.cancelled: the worker abandons it
                time.sleep(0.05)

        tasks.update({name: recorded(fn) for name, fn in (
            ("kill_self", kill_self), ("always_raise", always_raise), ("hang", hang))})
        # it returns, but a result the worker cannot store: a failure, not a success
        tasks["bad_result"] = recorded(bad_result, returned="unserializable")
        tasks["hang_sync"] = Task(hang_sync)
    return tasks


def record_commits(worker: Worker, ledger: Ledger) -> None:
    """Make the worker's storage record in the ledger whether each fenced write was
    accepted or refused (the stream tells which commits landed; this tells which ones the
    fencing token refused). Storage has ``__slots__``, so the instance is moved to a
    recording subclass rather than patched."""
    base = type(worker.storage)
    queue = worker.storage.keys.name
    namespace: dict[str, Any] = {"__slots__": ()}
    batched = hasattr(base, "complete_many")
    for verb in FENCED_VERBS:
        if verb == "complete" and batched:
            continue  # complete goes through complete_many

        def make(verb: str) -> Callable[..., Awaitable[None]]:
            original = getattr(base, verb)

            async def call(self: Any, job_id: str, token: int, *args: Any, **kwargs: Any) -> None:
                try:
                    await original(self, job_id, token, *args, **kwargs)
                except (LeaseLost, JobNotInState, ResponseError) as exc:
                    # refused by the fence, or by the server itself (out of memory)
                    ledger.commit(queue, job_id, token, verb, False, type(exc).__name__)
                    raise
                ledger.commit(queue, job_id, token, verb, True)
            return call

        namespace[verb] = make(verb)
    if batched:  # batched acks: one code per completion
        async def complete_many(self: Any, done: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                codes, claimed = await base.complete_many(self, done, *args, **kwargs)  # type: ignore[attr-defined]
            except ResponseError as exc:
                for job_id, token, _ in done:
                    ledger.commit(queue, job_id, token, "complete", False, type(exc).__name__)
                raise
            for (job_id, token, _), code in zip(done, codes, strict=True):
                ledger.commit(queue, job_id, token, "complete", code >= 0,
                              "" if code >= 0 else f"code {code}")
            return codes, claimed

        namespace["complete_many"] = complete_many
    worker.storage.__class__ = type("RecordingStorage", (base,), namespace)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m faults.worker_main")
    p.add_argument("--queue", required=True)
    p.add_argument("--redis", required=True)
    p.add_argument("--ledger", required=True)
    p.add_argument("--lease", type=float, default=2.0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--mode", choices=("normal", "poison"), default="normal")
    p.add_argument("--max-stalls", type=int, default=1)
    p.add_argument("--job-timeout", type=float, default=300.0)
    p.add_argument("--shutdown-timeout", type=float, default=30.0)
    p.add_argument("--cancel-grace", type=float, default=1.0)
    p.add_argument("--max-events", type=int, default=10_000_000)
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format=f"%(asctime)s {os.getpid()} %(name)s %(levelname)s %(message)s")
    if os.environ.get(RENEW_ON_LOOP_ENV) == "1":
        LeaseKeeper.run = _renew_on_loop  # type: ignore[method-assign]
    if os.environ.get(ATTEMPTS_BY_JOB_ENV) == "1":
        logging.getLogger("faults").warning("control: attempts keyed by job id (patched: %s)",
                                            ", ".join(key_attempts_by_job()) or "nothing to patch")
    ledger = Ledger(args.ledger)
    name = f"faults-{os.getpid()}"
    worker = Worker(args.queue, handlers(ledger, args.queue, args.mode), args.redis,
                    concurrency=args.concurrency, lease=args.lease, max_stalls=args.max_stalls,
                    job_timeout=args.job_timeout, shutdown_timeout=args.shutdown_timeout,
                    cancel_grace=args.cancel_grace, name=name)
    # The checker reads the whole event stream at the end: keep all of it.
    worker.storage.max_events = args.max_events
    record_commits(worker, ledger)
    ledger.worker(args.queue, name, args.lease, args.concurrency)
    ledger.harness("worker_ready", os.getpid(), args.queue)
    try:
        asyncio.run(worker.run())
    finally:
        ledger.harness("worker_exit", os.getpid(), str(dict(worker.counters)))
        with contextlib.suppress(Exception):
            ledger.close()
    sys.stdout.flush()
    sys.stderr.flush()
    # An abandoned sync handler (hang_sync) is a non-daemon pool thread that the
    # interpreter would wait for at exit forever; the worker itself has stopped cleanly.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
