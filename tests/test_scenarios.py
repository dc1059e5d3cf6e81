"""The scenario apps of ``examples/scenarios`` end to end, with time compressed hard, on
unique queues of the test server (deleted afterwards)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from types import ModuleType

import pytest

from shunter import Queue
from shunter.cli.demo import load_scenario

from .conftest import REDIS_URL

pytestmark = pytest.mark.redis


@pytest.fixture
async def fresh_queue() -> AsyncIterator[str]:
    name = f"t-scenario-{uuid.uuid4().hex[:8]}"
    yield name
    async with Queue(name, REDIS_URL) as queue:
        await queue.obliterate(force=True)


def scenario(name: str) -> ModuleType:
    return load_scenario(name)


async def test_plan_pipeline(fresh_queue: str, caplog: pytest.LogCaptureFixture) -> None:
    plans = scenario("plan_pipeline")
    caplog.set_level(logging.WARNING, logger="examples.plan_pipeline")
    report = await plans.run(REDIS_URL, queue=fresh_queue, time_scale=0.001, stage_seconds=0.01)
    assert (report["enqueued"], report["duplicates"], report["processed"], report["retried"],
            report["dead_lettered"]) == (5, 1, 5, 1, 0)
    assert report["results"]["plan-chloe-3"]["stages"] == [name for name, _ in plans.STAGES]
    async with Queue(fresh_queue, REDIS_URL) as queue:
        chloe = await queue.get_job("plan-chloe-3")
        assert chloe.attempts_made == 2 and chloe.progress["percent"] == 100  # timed out, then ok
        assert chloe.progress["stage"] == 6 and set(chloe.progress) == {"stage", "name", "message",
                                                                           "percent"}
        assert chloe.error is not None and "<email>" in chloe.error.message
        assert "@example.com" not in chloe.error.message
        assert await queue.get_job("plan-ana-6") is None  # the second click: ana's plan 1
        # every plan finished, so each user's key is free: a new request makes a new plan
        replan = await plans.request_plan(queue, "ana", "ana@example.com", "7")
        assert (replan.id, replan.deduplicated) == ("plan-ana-7", False)
        assert (await plans.request_plan(queue, "ana", "ana@example.com", "8")).id == replan.id
    logged = [r.getMessage() for r in caplog.records if r.name == "examples.plan_pipeline"]
    assert logged and all("@" not in line for line in logged)


def test_plan_redaction() -> None:
    plans = scenario("plan_pipeline")
    assert plans.redact("mail ana.b+x@example.co.uk now") == "mail <email> now"


async def test_webhooks(fresh_queue: str) -> None:
    hooks = scenario("webhooks")
    report = await hooks.run(REDIS_URL, queue=fresh_queue, time_scale=0.00005)
    assert (report["received"], report["enqueued"], report["duplicates"]) == (15, 12, 3)
    assert (report["processed"], report["retried"], report["dead_lettered"]) == (9, 16, 3)
    assert report["dead_letter_ids"] == ["github.evt_010", "stripe.evt_009", "stripe.evt_011"]
    async with Queue(fresh_queue, REDIS_URL) as queue:
        gone = await queue.get_job("stripe.evt_009")  # endpoint gone: the whole schedule
        assert gone.attempts_made == 7 and gone.state == "failed"
        forged = await queue.get_job("stripe.evt_011")  # bad signature: no retries
        assert forged.attempts_made == 1 and forged.error is not None
        assert forged.error.type == "UnrecoverableError"
        flaky = await queue.get_job("github.evt_008")
        assert flaky.state == "completed" and flaky.attempts_made == 3  # two 503s, then ok
        await queue.replay("stripe.evt_009")  # dead-letter replay
        assert (await queue.get_job("stripe.evt_009")).state == "waiting"


def test_webhook_schedule_shape() -> None:
    hooks = scenario("webhooks")
    entry = hooks.delivery("stripe", "evt_1", "ok")
    assert entry["job_id"] == "stripe.evt_1" and entry["max_attempts"] == 7
    assert entry["backoff"].delays == (5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)
    assert entry["backoff"].spread == 1.0


async def test_engagement(fresh_queue: str) -> None:
    engagement = scenario("engagement")
    report = await engagement.run(REDIS_URL, queue=fresh_queue, time_scale=1 / 36000)
    assert (report["enqueued"], report["duplicates"]) == (12, 12)
    assert (report["processed"], report["retried"], report["dead_lettered"]) == (10, 2, 2)
    assert report["rejected"] == "comment of member 8 is 300 characters; the limit is 280"
    assert report["stats"] == {"post:1": {"pending": 0, "scheduled": 0, "executed": 10, "failed": 2}}
    assert sum(report["stats_at_start"]["post:1"].values()) == 12
    assert report["busiest_hour"] <= 3
    async with Queue(fresh_queue, REDIS_URL) as queue:
        auth = await queue.get_job("post-1.like.6")  # auth: stop at once, a human must look
        assert auth.state == "failed" and auth.attempts_made == 1 and auth.group == "post:1"
        limited = await queue.get_job("post-1.like.2")  # rate limited: deferred, not an attempt
        assert limited.state == "completed" and limited.deferrals == 1
        assert limited.attempts_made == 1  # only the successful attempt counts
        network = await queue.get_job("post-1.like.4")
        assert network.state == "completed" and network.attempts_made == 2


async def test_engagement_at_most_three_per_post_per_hour(fresh_queue: str) -> None:
    """The seed scenario end to end, an hour scaled to one second: three posts, three
    workers of concurrency 5, every post's group limited to Rate(3, per=1.0)."""
    engagement = scenario("engagement")
    hour = 1.0
    report = await engagement.run(REDIS_URL, queue=fresh_queue, time_scale=hour / 3600,
                                  posts=3, workers=3)
    assert (report["enqueued"], report["duplicates"]) == (36, 36)
    assert report["rate_per_post"] == "3/1s"
    # every engagement ran: post-1 has the scripted errors, the others none
    assert report["stats"] == {
        "post:1": {"pending": 0, "scheduled": 0, "executed": 10, "failed": 2},
        "post:2": {"pending": 0, "scheduled": 0, "executed": 12, "failed": 0},
        "post:3": {"pending": 0, "scheduled": 0, "executed": 12, "failed": 0},
    }
    assert all(sum(s.values()) == 12 for s in report["stats_at_start"].values())
    for name, group in report["groups"].items():  # the engine's own totals per group agree
        stats = report["stats"][name]
        assert (group["completed"], group["failed"], group["waiting"], group["active"]) == (
            stats["executed"], stats["failed"], 0, 0)
        assert group["rate"] == "3/1s"
    # never more than 3 starts of one post within an hour, whoever the member and worker:
    # the 4th start after any start comes a full hour later (server times, ms)
    starts = report["starts"]
    assert sorted(starts) == ["post:1", "post:2", "post:3"]
    assert len(starts["post:1"]) == 14  # 12 jobs, a network retry and a deferral
    assert len(starts["post:2"]) == len(starts["post:3"]) == 12
    for group, at in starts.items():
        gaps = [later - first for first, later in zip(at, at[3:], strict=False)]
        assert min(gaps) >= hour - 0.002, (group, gaps)
        assert engagement.busiest_window(at, hour) == 3
    assert report["busiest_hour"] == 3
    # likes spread over 5-30 min, in member order; comments over 1-6 h (server times)
    due = report["scheduled_for"]
    for post in ("post-1", "post-2", "post-3"):
        likes = [due[f"{post}.like.{m}"] for m in range(9)]
        assert likes == sorted(likes)
        assert likes[0] >= 300 / 3600 - 0.01 and likes[-1] <= 1800 / 3600 + 0.01
        for member in (0, 3, 5):
            assert 1.0 - 0.01 <= due[f"{post}.comment.{member}"] <= 6.0 + 0.01


def test_engagement_plan_validates_and_groups_by_post() -> None:
    engagement = scenario("engagement")
    plans = engagement.plan_engagements("post-17", 3, {1: "nice"})
    assert [e["job_id"] for e in plans["like"]] == ["post-17.like.0", "post-17.like.1",
                                                   "post-17.like.2"]
    assert [e["job_id"] for e in plans["comment"]] == ["post-17.comment.1"]
    assert {e["group"] for e in plans["like"] + plans["comment"]} == {"post:17"}
    assert all("delay" not in e and "run_at" not in e for e in plans["like"])  # add_spread sets them
    with pytest.raises(ValueError, match="limit is 280"):
        engagement.plan_engagements("p", 3, {1: "y" * 281})
    assert engagement.busiest_window([0.0, 0.5, 0.9, 1.0, 1.5], 1.0) == 3
    assert engagement.busiest_window([0.0, 0.5, 0.9, 0.95], 1.0) == 4
