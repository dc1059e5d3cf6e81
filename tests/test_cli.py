"""Every ``shunter`` command through the installed entry point (``.venv/bin/shunter``), in
subprocesses, against the test server. Queues are unique per test; waits poll with a
deadline; every process a test starts is stopped in a ``finally`` block."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from shunter import Queue, embedded, stats
from shunter.producer import build_spec
from shunter.storage import Storage

from .conftest import REDIS_URL, eventually

pytestmark = pytest.mark.redis

SHUNTER = str(Path(sys.executable).parent / "shunter")

APP = '''
import asyncio, gc, os
from shunter import Worker

async def frozen(job):
    return gc.get_freeze_count()

async def echo(job):
    return {"echo": job.data, "pid": os.getpid()}

async def slow(job):
    await asyncio.sleep(job.data["seconds"])
    return "slow done"

async def crash_once(job):
    marker = job.data["marker"]
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(3)
    return "survived"

async def boom(job):
    raise ValueError("boom")

TASKS = {"echo": echo, "slow": slow, "crash_once": crash_once, "boom": boom, "frozen": frozen}

def make(queue, redis=None):
    return Worker(queue, TASKS, redis, lease=2.0, shutdown_timeout=10)

worker = Worker("cli-app-default", TASKS, lease=2.0)
'''


def sh(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
       timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "SHUNTER_REDIS_URL": REDIS_URL, **(env or {})}
    return subprocess.run([SHUNTER, *args], capture_output=True, text=True, env=full_env, cwd=cwd,
                          timeout=timeout)


def ok(*args: str, **kwargs: Any) -> str:
    proc = sh(*args, **kwargs)
    assert proc.returncode == 0, f"shunter {' '.join(args)} -> {proc.returncode}\n{proc.stderr}"
    return proc.stdout


def as_json(*args: str, **kwargs: Any) -> Any:
    return json.loads(ok(*args, "--json", **kwargs))


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {proc.stderr!r}"
    return lines[0]


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "cli_app.py").write_text(APP)
    return tmp_path


def spawn(*args: str, cwd: Path, log: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "SHUNTER_REDIS_URL": REDIS_URL}
    return subprocess.Popen([SHUNTER, *args], cwd=cwd, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=log.open("w"))


@contextlib.contextmanager
def stopped(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# -- usage and errors ------------------------------------------------------------------------------

def test_help_version_and_usage_errors() -> None:
    out = ok("--help")
    for command in ("worker", "enqueue", "status", "jobs", "job", "replay", "cancel", "pause",
                    "resume", "clean", "server", "demo"):
        assert f"  {command} " in out
    assert "  retry " not in out  # the command is named after Queue.replay
    assert "0.1.0" in ok("--version")
    proc = sh("nosuch")
    assert proc.returncode == 2 and "No such command" in one_line(proc)
    proc = sh("enqueue", "q-only")
    assert proc.returncode == 2 and "usage" in one_line(proc)


def test_unreachable_redis_is_one_line_and_exit_1() -> None:
    proc = sh("jobs", "some-queue", "--redis", "redis://127.0.0.1:1/0")
    assert proc.returncode == 1
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in one_line(proc)


# -- producing and inspecting ----------------------------------------------------------------------

async def test_enqueue_jobs_and_job(queue: Queue) -> None:
    q = queue.name
    out = ok("enqueue", q, "echo", "--data", '{"n": 1}', "--job-id", "job-1", "--priority", "5",
             "--max-attempts", "2", "--timeout", "30s", "--redis", REDIS_URL)
    assert out == "job-1\n"
    job = await queue.get_job("job-1")
    assert (job.task, job.data, job.priority, job.max_attempts, job.timeout) == ("echo", {"n": 1}, 5, 2, 30.0)

    again = sh("enqueue", q, "echo", "--job-id", "job-1")
    assert again.returncode == 0 and again.stdout == "job-1\n"
    assert "already exists (waiting)" in one_line(again)

    delayed = ok("enqueue", q, "echo", "--delay", "1h").strip()
    assert (await queue.get_job(delayed)).state == "scheduled"

    bad = sh("enqueue", q, "echo", "--data", "{nope")
    assert bad.returncode == 2 and "--data" in one_line(bad) and "not valid JSON" in bad.stderr
    bad_id = sh("enqueue", q, "echo", "--job-id", "a:b")
    assert bad_id.returncode == 2 and "invalid input" in one_line(bad_id)
    bad_delay = sh("enqueue", q, "echo", "--delay", "soon")
    assert bad_delay.returncode == 2 and "not a duration" in one_line(bad_delay)
    old_flag = sh("enqueue", q, "echo", "--attempts", "2")  # one name: --max-attempts
    assert old_flag.returncode == 2 and "No such option" in one_line(old_flag)

    listed = as_json("jobs", q)
    assert {j["id"] for j in listed} == {"job-1", delayed}
    assert [j["id"] for j in as_json("jobs", q, "--state", "scheduled")] == [delayed]
    assert len(as_json("jobs", q, "--limit", "1")) == 2  # the limit is per state
    assert "job-1" in ok("jobs", q)

    shown = as_json("job", "job-1", "--queue", q)
    assert shown["state"] == "waiting" and shown["data"] == {"n": 1} and shown["logs"] == []
    assert "echo" in ok("job", "job-1", "-q", q)
    missing = sh("job", "nope", "-q", q)
    assert missing.returncode == 3
    assert one_line(missing) == f"shunter: error: job 'nope' not found in queue '{q}'"


async def test_cancel_replay_pause_resume(queue: Queue) -> None:
    q = queue.name
    for job_id in ("a", "b"):
        await queue.add("echo", job_id=job_id)
    assert ok("cancel", "a", "--queue", q, "--reason", "not needed") == "cancelled a\n"
    job = await queue.get_job("a")
    assert (job.state, job.cancelled_by, job.cancel_reason) == ("cancelled", "shunter-cli", "not needed")

    assert ok("replay", "a", "-q", q) == "replayed a: waiting\n"
    assert (await queue.get_job("a")).state == "waiting"
    refused = sh("replay", "b", "-q", q)  # waiting jobs cannot be replayed
    assert refused.returncode == 1
    assert one_line(refused).startswith("shunter: replay b: cannot replay job 'b'")
    several = sh("replay", "a", "zz", "-q", q)  # one line per id: a is waiting now, zz unknown
    assert several.returncode == 1 and "shunter: replay zz: " in several.stderr
    assert sh("replay", "zz", "-q", q).returncode == 3
    assert sh("retry", "a", "-q", q).returncode == 2  # the old name is gone
    unknown = sh("cancel", "zz", "-q", q)
    assert unknown.returncode == 3 and "not found" in one_line(unknown)

    assert ok("pause", q) == f"paused {q}\n"
    assert (await queue.counts())["paused"] == 1
    assert ok("resume", q) == f"resumed {q}\n"
    assert (await queue.counts())["paused"] == 0


# -- workers ---------------------------------------------------------------------------------------

async def test_worker_burst_factory_on_two_queues_then_clean(queue: Queue, app: Path) -> None:
    q, q2 = queue.name, f"{queue.name}-b"
    other = Queue(q2, REDIS_URL)
    try:
        first = await queue.add("echo", {"n": 1})
        second = await other.add("echo", {"n": 2})
        failing = await queue.add("boom", max_attempts=1)
        ok("worker", "cli_app:make", "--queues", f"{q},{q2}", "--burst", "-c", "2", cwd=app)
        assert (await first.wait(timeout=5))["echo"] == {"n": 1}
        assert (await second.wait(timeout=5))["echo"] == {"n": 2}
        assert (await queue.get_job(failing.id)).state == "failed"
        # one worker served both queues (no clone per queue)
        ran_first, ran_second = await queue.get_job(first.id), await other.get_job(second.id)
        assert ran_first is not None and ran_second is not None
        assert ran_first.worker is not None and ran_first.worker == ran_second.worker

        assert ok("clean", q, "--older-than", "1h") == f"deleted 0 completed jobs from {q}\n"
        assert ok("clean", q) == f"deleted 1 completed job from {q}\n"
        assert ok("clean", q, "--state", "failed", "--limit", "5") == f"deleted 1 failed job from {q}\n"
        counts = await queue.counts()
        assert counts["completed"] == counts["failed"] == 0
        bad = sh("clean", q, "--older-than", "-1h")
        assert bad.returncode == 2
        frozen = await queue.add("frozen")
        ok("worker", "cli_app:make", "-Q", q, "--burst", cwd=app)
        assert await frozen.wait(timeout=5) > 1000, "shunter worker freezes the GC's startup objects"
    finally:
        await other.obliterate(force=True)
        await other.close()


async def test_worker_object_target_is_moved_to_the_given_queue(queue: Queue, app: Path) -> None:
    job = await queue.add("echo", {"x": True})
    ok("worker", "cli_app:worker", "-Q", queue.name, "--burst", cwd=app)
    assert (await job.wait(timeout=5))["echo"] == {"x": True}
    bad = sh("worker", "cli_app:missing", cwd=app)
    assert bad.returncode == 2 and "no attribute 'missing'" in one_line(bad)


async def test_worker_sigterm_lets_the_running_job_finish(queue: Queue, app: Path,
                                                          tmp_path: Path) -> None:
    job = await queue.add("slow", {"seconds": 1.0})
    proc = spawn("worker", "cli_app:make", "-Q", queue.name, cwd=app, log=tmp_path / "w.log")
    with stopped(proc):
        await eventually(lambda: _state(queue, job.id, "active"), 15, message="job claimed")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    assert await job.wait(timeout=1) == "slow done"
    assert "finishing in-flight jobs" in (tmp_path / "w.log").read_text()


async def _state(queue: Queue, job_id: str, state: str) -> bool:
    return (await queue.get_job(job_id)).state == state


async def test_worker_processes_are_supervised(queue: Queue, app: Path, tmp_path: Path) -> None:
    log = tmp_path / "supervisor.log"
    proc = spawn("worker", "cli_app:make", "-Q", queue.name, "--processes", "2", cwd=app, log=log)
    children: list[int] = []
    with stopped(proc):
        await eventually(lambda: len(_started(log)) == 2, 15, message="two worker processes")
        crash = await queue.add("crash_once", {"marker": str(tmp_path / "crashed")}, max_attempts=3)
        await eventually(lambda: len(_started(log)) == 3, 20, message="a crashed process restarted")
        assert "exited with status 3" in log.read_text()
        children = _started(log)
        assert embedded.launcher._alive(children[-1])
        jobs = [await queue.add("echo", {"i": i}) for i in range(6)]
        for job in jobs:
            await job.wait(timeout=15)
        assert await crash.wait(timeout=20) == "survived"  # rescued after its lease expired
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    for pid in children:
        await eventually(lambda pid=pid: not embedded.launcher._alive(pid), 10, message=f"child {pid} exited")


def _started(log: Path) -> list[int]:
    return [int(line.rsplit("pid ", 1)[1].rstrip(")")) for line in log.read_text().splitlines()
            if "worker process" in line and "started (pid" in line]


# -- status --------------------------------------------------------------------------------------

async def test_status_counts_workers_and_throughput(queue: Queue, start_worker: Any,
                                                    tmp_path: Path) -> None:
    async def echo(job: Any) -> int:
        return 1

    jobs = [await queue.add("echo") for _ in range(3)]
    await queue.add("echo", delay=3600)
    running = start_worker({"echo": echo})
    for job in jobs:
        await job.wait(timeout=10)
    await eventually(queue.storage.heartbeats.alive, 10, message="a heartbeat")

    (mine,) = as_json("status", queue.name)
    assert mine["counts"]["completed"] == 3 and mine["counts"]["scheduled"] == 1
    assert [w["id"] for w in mine["workers"]] == [running.worker.id]
    assert mine["workers"][0]["concurrency"] == running.worker.concurrency
    assert mine["completed_recent"] == 3 and mine["jobs_per_second"] > 0

    everything = as_json("status")  # discovery by SCAN finds the queue
    assert queue.name in {q["queue"] for q in everything}
    text = ok("status", queue.name)
    assert queue.name in text and "workers alive" in text and running.worker.id in text

    await running.stop()
    (after,) = as_json("status", queue.name)
    assert after["workers"] == []  # a worker that stops cleanly removes its heartbeat


async def _server_ms(client: redis.asyncio.Redis) -> int:
    sec, usec = await client.time()
    return int(sec) * 1000 + int(usec) // 1000


async def _completions(client: redis.asyncio.Redis, queue: Queue, per_second: int,
                       seconds: int, cap: int) -> int:
    """``complete`` events at a steady rate over the last ``seconds`` of server time,
    written as the scripts write them (XADD MAXLEN ~ cap); returns when the newest is."""
    end = await _server_ms(client)
    step = 1000 // per_second
    async with client.pipeline(transaction=False) as pipe:
        for ts in range(end - seconds * 1000 + step, end + 1, step):
            pipe.xadd(queue.storage.keys.events, {"event": "complete", "job": f"j{ts}",
                                                  "state": "completed"},
                      id=f"{ts}-0", maxlen=cap, approximate=True)
        await pipe.execute()
    return end


async def test_status_rate_is_over_the_span_a_capped_stream_holds(queue: Queue,
                                                                  client: redis.asyncio.Redis) -> None:
    # 200 jobs/s for 40 s into a stream capped near 2,000 events: it holds the last ~10 s.
    # Dividing those by the 60 s window gave ~33/s.
    end = await _completions(client, queue, 200, 40, 2000)
    first: Any = await client.xrange(queue.storage.keys.events, count=1)
    oldest = int(first[0][0].split(b"-")[0])
    held = await client.xlen(queue.storage.keys.events)
    (mine,) = as_json("status", queue.name)
    after = await _server_ms(client)
    assert mine["window_seconds"] == 60 and mine["completed_recent"] == held
    assert (end - oldest) / 1000 <= mine["span_seconds"] <= (after - oldest) / 1000
    rate = mine["jobs_per_second"]
    assert held * 1000 / (after - oldest) - 0.01 <= rate <= held * 1000 / (end - oldest) + 0.01
    assert 150 < rate <= 200
    assert re.search(r"│ +1\d\d\.\d\d \(1\d(\.\d)?s\) │", ok("status", queue.name))  # the span shown


async def test_status_rate_of_a_busy_queue_with_a_small_stream(queue_name: str,
                                                               client: redis.asyncio.Redis) -> None:
    # Real scripts, a stream capped at 1,000 events (the queue's max_events): a known
    # number of jobs enqueued, claimed and completed in a measured span, then the rate.
    storage = Storage(client, queue_name, max_events=1000)
    done = 0
    start = time.monotonic()
    # at least 1,500 jobs (4,500 events), so that the capped stream holds only the newest
    # third of them however slow the machine is today
    while (elapsed := time.monotonic() - start) < 1.5 or done < 1500:
        await storage.enqueue(build_spec("t", done, max_payload_bytes=1024))
        (job,) = (await storage.claim(1, 60_000, "w")).jobs
        await storage.complete(job[b"id"].decode(), int(job[b"token"]), b"1")
        done += 1
    measured = done / elapsed
    try:
        got = await stats.queue_stats(client, queue_name, window=60)
        assert got.completed_recent < done / 3 and got.span < 1.5  # only the newest are held
        assert 0.6 * measured < got.per_second < 1.6 * measured, (got, measured)
    finally:
        await storage.obliterate(force=True)


async def test_status_rate_of_a_queue_busy_only_lately(queue: Queue, client: redis.asyncio.Redis) -> None:
    # A stream that was never trimmed holds the whole window: 30 completions in the last
    # 10 s of a 60 s window are 0.5/s over the window, not 3/s over the 10 s.
    await _completions(client, queue, 3, 10, 10_000)
    got = await stats.queue_stats(client, queue.name, window=60)
    assert (got.completed_recent, got.span, got.per_second) == (30, 60, 0.5)


async def test_status_rate_when_the_window_holds_more_than_is_read(
        queue: Queue, client: redis.asyncio.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats, "MAX_EVENTS_READ", 500)
    end = await _completions(client, queue, 200, 10, 10_000)  # 2,000 events, never trimmed
    got = await stats.queue_stats(client, queue.name, window=60)
    after = await _server_ms(client)
    assert got.completed_recent == 500  # the newest 500: from end - 2.495 s
    assert (end - 2495) <= after - got.span * 1000 <= end - 2495 + (after - end)
    assert 500 / (2.495 + (after - end) / 1000) - 0.01 <= got.per_second <= 500 / 2.495 + 0.01


async def test_status_watch_refreshes_until_ctrl_c(queue: Queue, tmp_path: Path) -> None:
    await queue.add("echo")
    proc = spawn("status", queue.name, "--watch", "--interval", "0.1", cwd=tmp_path,
                 log=tmp_path / "watch.log")
    with stopped(proc):
        assert proc.stdout is not None
        seen = 0
        deadline = time.monotonic() + 15
        while seen < 2 and time.monotonic() < deadline:
            seen += queue.name in proc.stdout.readline()
        assert seen >= 2, "status --watch did not refresh"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0


# -- the embedded server ----------------------------------------------------------------------------

def test_server_start_status_stop(tmp_path: Path) -> None:
    data = tmp_path / "srv"
    pid = None
    try:
        out = ok("server", "start", "--data-dir", str(data))
        assert out.startswith("started valkey-server pid ")
        pid = int(out.split("pid ")[1].split()[0])
        assert "already running" in ok("server", "start", "--data-dir", str(data))
        info = as_json("server", "status", "--data-dir", str(data))
        assert info["running"] and info["pid"] == pid and info["mode"] == "shared"
        assert info["server"].startswith("valkey 8.") and info["aof"] is True
        assert info["maxmemory_policy"] == "noeviction"
        assert ok("server", "stop", "--data-dir", str(data)) == f"stopped server pid {pid} in {data}\n"
        assert not embedded.launcher._alive(pid)
        gone = sh("server", "status", "--data-dir", str(data))
        assert gone.returncode == 3 and "no server running" in gone.stdout
        assert "no server running" in ok("server", "stop", "--data-dir", str(data))
    finally:
        if pid and embedded.launcher._alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_server_status_describes_a_server_by_url() -> None:
    info = as_json("server", "status", "--redis", REDIS_URL)
    assert info["url"] == REDIS_URL and info["server"].split()[0] in ("redis", "valkey")


def test_commands_fall_back_to_the_embedded_server(tmp_path: Path) -> None:
    data = tmp_path / "auto"
    env = {k: v for k, v in os.environ.items() if k != "SHUNTER_REDIS_URL"}
    env["SHUNTER_DATA_DIR"] = str(data)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SHUNTER, *args], capture_output=True, text=True, env=env, timeout=30)

    try:
        first = run("enqueue", "auto-queue", "echo", "--job-id", "auto-1")
        assert first.returncode == 0 and first.stdout == "auto-1\n", first.stderr
        assert "started the embedded server" in first.stderr
        found = run("job", "auto-1", "-q", "auto-queue", "--json")
        assert found.returncode == 0 and json.loads(found.stdout)["state"] == "waiting"
        assert "started" not in found.stderr  # the second command found the running server
        status = run("server", "status", "--json")
        assert status.returncode == 0 and json.loads(status.stdout)["keys"] >= 1
    finally:
        stop = run("server", "stop")
        assert stop.returncode == 0 and "stopped server pid" in stop.stdout
