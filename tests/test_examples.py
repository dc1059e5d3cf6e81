"""Every example runs to completion on its own against the test Redis, prints what it is
about, and deletes its queue afterwards."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from .conftest import REDIS_URL

pytestmark = pytest.mark.redis

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

#: example file -> a line (regex) its output must contain
EXPECTED = {
    "quickstart.py": r"summary: waiting=0, scheduled=0, active=0, completed=3, failed=1, cancelled=0",
    "retries.py": r"RetryAfter \(max_attempts=1\)\s+completed attempts_made=1 deferrals=2",
    "cancellation.py": r"summary: cancelled=5 completed=1",
    "sync_producer.py": r"slow job after shutdown: completed",
    "events.py": r"summary: cancel=1, claim=5, complete=3, drain=1, enqueue=6, fail=1",
    "hooks.py": r"outcomes: \{'completed': 6, 'retried': 1\}|outcomes: \{'retried': 1, 'completed': 6\}",
    "queue_limits.py": r"summary: completed=20 most_at_once=2",
    "spread.py": r"summary: liked=12 ",
    "dedup.py": r"summary: exports=4 refreshes=1 searched=\['shunter'\]",
    "groups.py": r"summary: completed=89 most_at_once_in_a_limited_group=2 throttled=1",
    "task_registry.py": r"summary: completed=16 failed=0",
    "process_pool.py": r"summary: completed=2 failed=1 processes started=\d ended=1",
    "fastapi_app.py": r"summary: accepted=202 final=completed last_event=completed not_found=404",
    "flask_app.py": r"summary: accepted=202 repeated=200 final=completed invalid=400 not_found=404",
}


def test_every_example_is_covered() -> None:
    assert {p.name for p in EXAMPLES.glob("*.py")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str) -> None:
    env = {**os.environ, "SHUNTER_REDIS_URL": REDIS_URL}
    proc = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True,
                          timeout=60, env=env, cwd=EXAMPLES.parent)
    assert proc.returncode == 0, f"{name} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert re.search(EXPECTED[name], proc.stdout), proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr

    queue = re.search(r"^queue: (\S+)$", proc.stdout, re.MULTILINE)
    assert queue, "every example prints the name of its queue"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert client.keys(f"shunter:{{{queue.group(1)}}}:*") == [], "the example left keys behind"
    finally:
        client.close()
