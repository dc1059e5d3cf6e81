"""``shunter demo`` end to end: its own owned server, the three scenarios, the summary, and
nothing left behind (server process, data directory) — also when it is killed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from shunter.embedded import launcher as server

from .conftest import REDIS_URL

pytestmark = pytest.mark.redis

SHUNTER = str(Path(sys.executable).parent / "shunter")
SUMMARY = re.compile(r"^summary: processed (\d+), retried (\d+), dead-lettered (\d+), "
                     r"duplicates ignored (\d+), time taken ([\d.]+) s$", re.MULTILINE)
STARTED = re.compile(r"\(pid (\d+), owned: it stops with this process\) in (\S+)")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "SHUNTER_REDIS_URL"}


def _wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server._alive(pid):
            return True
        time.sleep(0.01)
    return False


def test_demo_runs_the_scenarios_and_leaves_nothing_behind() -> None:
    proc = subprocess.run([SHUNTER, "demo", "--speed", "6"], capture_output=True, text=True,
                          env=_env(), timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    started = STARTED.search(proc.stdout)
    assert started, proc.stdout
    pid, data = int(started.group(1)), Path(started.group(2))
    summary = SUMMARY.search(proc.stdout)
    assert summary, proc.stdout
    processed, retried, dead, duplicates = (int(summary.group(i)) for i in range(1, 5))
    assert (processed, retried, dead, duplicates) == (24, 19, 5, 16)
    assert float(summary.group(5)) < 60
    for scenario in ("plan pipeline", "webhooks", "engagement"):
        assert scenario in proc.stdout
    assert "plan-chloe-3: attempt failed, retrying" in proc.stdout  # live progress, piped
    assert "stage 6/6 done: plan ready (100%)" in proc.stdout
    assert "not yet" not in proc.stdout
    limit = re.search(r"at most 3 engagements per post per hour \(group rate limit 3/(\S+)s at "
                      r"this speed\): busiest hour of a post had (\d) starts", proc.stdout)
    assert limit and 1 <= int(limit.group(2)) <= 3, proc.stdout
    assert "dead letters (replay with `shunter replay`)" in proc.stdout  # the command's name
    assert f"server pid {pid} stopped" in proc.stdout
    assert not server._alive(pid) and not data.exists()


def test_demo_on_a_given_server_deletes_its_queues() -> None:
    proc = subprocess.run([SHUNTER, "demo", "--speed", "6", "--redis", REDIS_URL],
                          capture_output=True, text=True, env=_env(), timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = SUMMARY.search(proc.stdout)
    assert summary and summary.group(1) == "24"
    queues = set(re.findall(r"\b(demo-(?:plan|webhooks|engagement)-[0-9a-f]{6})\b", proc.stdout))
    assert len(queues) == 3, proc.stdout
    client = redis.Redis.from_url(REDIS_URL)
    try:
        for name in queues:
            assert client.keys(f"shunter:{{{name}}}:*") == []
    finally:
        client.close()


def test_killed_demo_takes_its_server_down() -> None:
    proc = subprocess.Popen([SHUNTER, "demo"], stdout=subprocess.PIPE, text=True, env=_env())
    pid, started = None, None
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        started = STARTED.search(line)
        assert started, line
        pid = int(started.group(1))
        assert server._alive(pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert _wait_dead(pid), "the demo's server outlived the demo"
    finally:
        if proc.poll() is None:
            proc.kill()
        if pid is not None and server._alive(pid):
            os.kill(pid, signal.SIGKILL)
        if started:
            subprocess.run(["rm", "-rf", started.group(2)], check=False)
