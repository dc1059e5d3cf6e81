"""A worker process frozen (SIGSTOP) past its lease, whose job is rescued meanwhile and,
on SIGCONT, claimed again by that same worker (it has a free slot) under a new token
(issue 8). The stale attempt must be interrupted, and only the new one may end the job:
once, completed, with one stall.

The worker runs in a real process (tests/paused_worker_main.py); its handler writes what
happens to it to a file, and the rescue runs here, in another process, while it is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shunter import Queue, State

from .conftest import eventually
from .paused_worker_main import LEASE
from .worker_support import events, settled

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[1]
HANDLER_SECONDS = 4.0  #: how long each attempt's handler runs unless interrupted
PAUSE = 2.0  #: how long the worker process stays stopped (twice its lease)


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    records: Path
    stderr: Path

    def read(self) -> list[dict[str, Any]]:
        """The handler's records so far (a line still being written is left out)."""
        if not self.records.exists():
            return []
        text = self.records.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]

    def log(self) -> str:
        """The end of the worker's log, for failure messages."""
        text = self.stderr.read_text(encoding="utf-8", errors="replace") if self.stderr.exists() else ""
        return text[-3000:]


def _resume(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


def _stopped(pid: int) -> bool:
    """True once the kernel reports the process stopped (state T in /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")


@pytest.fixture
def worker_process(tmp_path: Path, queue_name: str, redis_url: str) -> Iterator[Any]:
    """``worker_process(mode)`` starts ``python -m tests.paused_worker_main`` on the test's
    queue, with an async or sync handler. Every process started is resumed (it may still be
    stopped), then ended with SIGTERM, and SIGKILL if it does not exit in time."""
    started: list[WorkerProcess] = []

    def start(mode: str) -> WorkerProcess:
        n = len(started)
        records, stderr = tmp_path / f"records-{n}.jsonl", tmp_path / f"worker-{n}.log"
        env = {**os.environ, "SHUNTER_TEST_REDIS_URL": redis_url, "SHUNTER_REDIS_URL": redis_url,
               "PYTHONPATH": os.pathsep.join(
                   p for p in (str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH")) if p)}
        with stderr.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.paused_worker_main", queue_name, redis_url,
                 str(records), mode, str(HANDLER_SECONDS)],
                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        started.append(WorkerProcess(proc, records, stderr))
        return started[-1]

    try:
        yield start
    finally:
        for worker in started:
            pid = worker.proc.pid
            if worker.proc.poll() is not None:
                continue
            _resume(pid)  # a stopped process would not act on SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            try:
                worker.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                worker.proc.wait(10)


async def _pause_while_rescued(queue: Queue, worker: WorkerProcess, job_id: str) -> float:
    """Stop the worker process once its handler started, rescue its job from here while it
    is stopped (as soon as the lease has expired), resume it after PAUSE seconds; returns
    the monotonic time of the SIGCONT."""

    def first_start() -> list[dict[str, Any]]:
        assert worker.proc.poll() is None, f"worker exited early:\n{worker.log()}"
        return [r for r in worker.read() if r["event"] == "start"]

    await eventually(first_start, 20, 0.02, message="first attempt started in the worker")
    pid = worker.proc.pid
    os.kill(pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        await eventually(lambda: _stopped(pid), 5, message="worker process stopped")

        async def rescued() -> bool:
            await queue.storage.rescue(max_stalls=1)
            return (await queue.get_job(job_id)).state is State.WAITING

        # The lease (renewed every LEASE/3 until the stop) runs out within LEASE.
        await eventually(rescued, 10, 0.05, message="job rescued back to waiting")
        # The length of the fault itself, not a wait for a condition.
        await asyncio.sleep(max(0.0, stopped_at + PAUSE - time.monotonic()))
        assert _stopped(pid), "the worker was resumed by someone else"
    finally:
        _resume(pid)
    return time.monotonic()


async def _check_one_completion(queue: Queue, worker: WorkerProcess, job_id: str,
                                resumed_at: float, stale_end: str, result: str) -> None:
    """The outcome must be the second attempt's alone; the first must have been stopped
    (its end recorded as ``stale_end``), soon after the resume, in the same process."""
    done = await settled(queue, job_id, timeout=20)

    def ended() -> list[dict[str, Any]]:
        records = worker.read()
        ends = [r for r in records if r["event"] != "start"]
        return records if {r["token"] for r in ends} >= {1, 2} else []

    with contextlib.suppress(AssertionError):  # the assertions below say what is missing
        await eventually(ended, 10, 0.05, message="both attempts ended")
    records = worker.read()
    seen = [(r["event"], r["token"]) for r in records]
    names = [(e["event"], e.get("token") or e.get("stalls") or "") for e in
             await events(queue.storage, job_id)]
    context = f"handler records {seen}; events {names}; worker log:\n{worker.log()}"

    assert (done.state, done.token, done.stalls, done.result) == (
        State.COMPLETED, 2, 1, result), f"job ended {done.state} token={done.token} " \
        f"stalls={done.stalls} result={done.result!r} error={done.error}; {context}"
    claims = await events(queue.storage, job_id, "claim")
    assert [c["token"] for c in claims] == ["1", "2"], context  # no third claim
    assert len(await events(queue.storage, job_id, "complete")) == 1, context
    rescues = await events(queue.storage, job_id, "rescue")
    assert [(r["state"], r["stalls"]) for r in rescues] == [("waiting", "1")], context

    # Two attempts, both in this one worker process, each ended once.
    assert [(r["event"], r["token"]) for r in records if r["event"] == "start"] == [
        ("start", 1), ("start", 2)], context
    assert {r["pid"] for r in records} == {worker.proc.pid}, context
    first = [r for r in records if r["token"] == 1 and r["event"] != "start"]
    second = [r for r in records if r["token"] == 2 and r["event"] != "start"]
    assert [r["event"] for r in first] == [stale_end], f"first attempt not interrupted; {context}"
    assert [r["event"] for r in second] == ["returned"], context
    # The stale attempt stops before the new one ends, and soon after the resume: its next
    # renewal (every LEASE/3) is refused. Two leases leave room for a loaded machine; left
    # alone it would run until about resume + HANDLER_SECONDS - (time before the stop).
    assert first[0]["t"] < second[0]["t"], context
    assert first[0]["t"] - resumed_at < 2 * LEASE, f"stale attempt stopped late; {context}"


@pytest.mark.parametrize(("kind", "stale_end"), [("async", "cancelled"), ("sync", "stopped")])
async def test_the_stale_attempt_of_a_paused_worker_is_interrupted_when_it_claims_the_job_again(
        queue: Queue, worker_process: Any, kind: str, stale_end: str) -> None:
    """Async handlers get CancelledError; sync handlers see job.cancelled and return."""
    job = await queue.add("long")
    worker = worker_process(kind)
    resumed_at = await _pause_while_rescued(queue, worker, job.id)
    await _check_one_completion(queue, worker, job.id, resumed_at, stale_end, "token 2")
