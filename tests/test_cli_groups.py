"""``shunter groups``: the list of a queue's groups, one group, pause and resume of one
group, through the installed entry point against the test server (as tests/test_cli.py).
Each test has its own queue (the ``queue`` fixture, obliterated afterwards)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shunter import Queue, Rate
from shunter.storage import Storage

from .conftest import REDIS_URL

pytestmark = pytest.mark.redis

SHUNTER = str(Path(sys.executable).parent / "shunter")
LEASE = 60_000


def sh(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHUNTER_REDIS_URL": REDIS_URL, "COLUMNS": "200"}
    return subprocess.run([SHUNTER, *args], capture_output=True, text=True, env=env, timeout=60)


def ok(*args: str) -> str:
    proc = sh(*args)
    assert proc.returncode == 0, f"shunter {' '.join(args)} -> {proc.returncode}\n{proc.stderr}"
    return proc.stdout


def as_json(*args: str) -> Any:
    return json.loads(ok(*args, "--json"))


async def three_groups(queue: Queue, storage: Storage) -> None:
    """post:1 blocked by its rate (one started), post:2 full (concurrency 1, weight 3),
    post:3 idle with one completed job."""
    await queue.configure_groups(rate=Rate(3, per=3600))
    await queue.configure_group("post:2", concurrency=1, rate=0, weight=3)
    for n in range(3):
        await queue.add("t", n, group="post:1")
        await queue.add("t", n, group="post:2")
    await queue.add("t", 9, group="post:3")
    claimed = (await storage.claim(10, LEASE, "w")).jobs
    assert sorted(j[b"group"].decode() for j in claimed) == ["post:1", "post:2", "post:3"]
    done = next(j for j in claimed if j[b"group"] == b"post:3")
    await storage.complete(done[b"id"].decode(), int(done[b"token"]), b"1")


async def test_groups_lists_every_group_with_its_state(queue: Queue, storage: Storage) -> None:
    await three_groups(queue, storage)
    rows = {g["name"]: g for g in as_json("groups", queue.name)}
    assert list(rows) == ["post:1", "post:2", "post:3"]
    one, two, three = rows["post:1"], rows["post:2"], rows["post:3"]
    assert (one["waiting"], one["active"], one["state"], one["rate"]) == (2, 1, "blocked", "3/3600s")
    assert one["next_eligible_ms"] is not None and one["concurrency"] is None
    assert (two["waiting"], two["active"], two["concurrency"], two["state"]) == (2, 1, 1, "full")
    assert (two["rate"], two["weight"], two["next_eligible_ms"]) == (None, 3.0, None)
    assert (three["waiting"], three["active"], three["completed"], three["state"]) == (0, 0, 1, "idle")

    table = ok("groups", queue.name)
    for column in ("group", "waiting", "active / limit", "rate", "weight", "state",
                   "next eligible", "completed", "failed", "cancelled"):
        assert column in table
    line = next(row for row in table.splitlines() if "post:1" in row)
    assert "blocked" in line and "3/3600s" in line and "1 / -" in line
    assert re.search(r"\(in (19m[0-9]{2}s|20m00s)\)", line), line  # 3 an hour: 20 min apart
    line = next(row for row in table.splitlines() if "post:2" in row)
    assert "full" in line and "1 / 1" in line


async def test_groups_pages_with_after_and_limit(queue: Queue) -> None:
    for name in ("c", "a", "b", "d"):
        await queue.add("t", 1, group=name)
    assert [g["name"] for g in as_json("groups", queue.name, "--limit", "2")] == ["a", "b"]
    assert [g["name"] for g in as_json("groups", queue.name, "--after", "b", "-n", "2")] == ["c", "d"]
    assert as_json("groups", queue.name, "--after", "d") == []
    assert "more may follow: --after b" in ok("groups", queue.name, "-n", "2")
    assert "no groups in queue" in ok("groups", queue.name, "--after", "d")


async def test_one_group_and_its_pause_and_resume(queue: Queue, storage: Storage) -> None:
    await queue.add("t", 1, group="user:7")
    await queue.add("t", 2, group="user:8")
    shown = as_json("groups", queue.name, "user:7")
    assert (shown["name"], shown["waiting"], shown["state"], shown["paused"]) == ("user:7", 1, "ready", False)

    out = ok("groups", queue.name, "user:7", "--pause")
    assert f"paused group user:7 of {queue.name}" in out and "paused" in out
    assert (await queue.group("user:7")).state == "paused"
    claimed = (await storage.claim(10, LEASE, "w")).jobs
    assert [j[b"group"] for j in claimed] == [b"user:8"]  # the paused group starts nothing

    resumed = json.loads(ok("groups", queue.name, "user:7", "--resume", "--json"))
    assert (resumed["state"], resumed["paused"]) == ("ready", False)
    assert [j[b"group"] for j in (await storage.claim(10, LEASE, "w")).jobs] == [b"user:7"]


async def test_a_group_with_nothing_yet_can_be_paused_before_it_exists(queue: Queue) -> None:
    shown = as_json("groups", queue.name, "later", "--pause")
    assert (shown["waiting"], shown["state"], shown["paused"]) == (0, "idle", True)
    await queue.add("t", 1, group="later")
    assert (await queue.group("later")).state == "paused"


def test_groups_usage_errors() -> None:
    for args, text in [
        (("groups", "q", "--pause"), "--pause needs a GROUP"),
        (("groups", "q", "g", "--after", "a"), "not with a GROUP"),
        (("groups", "q", "bad group"), "group"),
        (("groups", "q", "--limit", "0"), "--limit"),
    ]:
        proc = sh(*args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert text in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
