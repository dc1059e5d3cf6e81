"""The scenario apps of ``examples/scenarios`` end to end, with time compressed hard, on
unique queues of the test server (deleted afterwards)."""

from __future__ import annotations

import itertools
import logging
import random
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
    assert report["stats"] == {"pending": 0, "scheduled": 0, "executed": 10, "failed": 2}
    assert sum(report["stats_at_start"].values()) == 12
    async with Queue(fresh_queue, REDIS_URL) as queue:
        auth = await queue.get_job("post-1.like.6")  # auth: stop at once, a human must look
        assert auth.state == "failed" and auth.attempts_made == 1
        limited = await queue.get_job("post-1.like.2")  # rate limited: deferred, not an attempt
        assert limited.state == "completed" and limited.deferrals == 1
        assert limited.attempts_made == 1  # only the successful attempt counts
        network = await queue.get_job("post-1.like.4")
        assert network.state == "completed" and network.attempts_made == 2


def test_engagement_stagger_is_linear_with_bounded_jitter() -> None:
    engagement = scenario("engagement")
    start, end, jitter = engagement.LIKE_WINDOW
    no_jitter = (start, end, 0.0)
    rng = random.Random(1)
    plain = [engagement.stagger(i, 11, no_jitter, rng) for i in range(11)]
    assert plain[0] == start and plain[-1] == end
    assert all(b - a == pytest.approx((end - start) / 10) for a, b in itertools.pairwise(plain))
    jittered = [engagement.stagger(i, 11, engagement.LIKE_WINDOW, rng) for i in range(11)]
    for base, value in zip(plain, jittered, strict=True):
        assert base * (1 - jitter) <= value <= base * (1 + jitter)
    assert jittered != plain
    with pytest.raises(ValueError, match="limit is 280"):
        engagement.plan_engagements("p", 3, {1: "y" * 281})
