"""The framework examples as their users would test them: examples/fastapi_app.py through
httpx's ASGI transport with a worker in the test's event loop, and examples/flask_app.py
with Flask's test client and a worker in a thread (shunter.testing.worker_thread). The
standalone runs of both are in test_examples.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

import shunter
from examples import fastapi_app, flask_app
from shunter.testing import StartWorker, assert_enqueued, assert_enqueued_sync, worker_thread

from .conftest import REDIS_URL, eventually

pytestmark = pytest.mark.redis


class Subscribed(shunter.QueueEvents):
    """QueueEvents that says when a reader has entered (the stream's cursor is fixed)."""

    entered: asyncio.Event

    async def __aenter__(self) -> Subscribed:
        await super().__aenter__()
        Subscribed.entered.set()
        return self


async def test_fastapi_app_enqueues_reports_progress_and_streams_it(
        shunter_queue_name: str, shunter_worker: StartWorker,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The job is held in its first stage until the test lets it go: "the id came back
    # before the job finished" is then a fact, not a race.
    release = asyncio.Event()

    async def held(name: str, data: dict[str, Any]) -> None:
        if name == "query":
            await release.wait()

    monkeypatch.setattr(fastapi_app, "run_stage", held)
    Subscribed.entered = asyncio.Event()
    monkeypatch.setattr(shunter, "QueueEvents", Subscribed)
    app = fastapi_app.create_app(shunter_queue_name, REDIS_URL)
    await shunter_worker(fastapi_app.worker([shunter_queue_name], REDIS_URL))

    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        began = time.perf_counter()
        accepted = await http.post("/reports", json={"account": "acme", "months": 3})
        assert time.perf_counter() - began < 2.0
        assert accepted.status_code == 202
        job_id = accepted.json()["id"]
        assert accepted.json()["state"] == "waiting"
        assert accepted.json()["events_url"] == f"/reports/{job_id}/events"
        job = await assert_enqueued(shunter_queue_name, fastapi_app.build_report,
                                    {"account": "acme", "months": 3},
                                    state=["waiting", "active"], redis=REDIS_URL)
        assert job.id == job_id

        async def first_stage() -> dict[str, Any] | None:
            status = (await http.get(f"/reports/{job_id}")).json()
            return status if status["progress"] else None

        status = await eventually(first_stage, message="progress of the first stage")
        assert status["state"] == "active" and status["result"] is None
        assert status["progress"] == {"stage": 1, "name": "query", "percent": 0}

        stream = asyncio.create_task(http.get(f"/reports/{job_id}/events"))
        await asyncio.wait_for(Subscribed.entered.wait(), 10)
        release.set()
        response = await asyncio.wait_for(stream, 20)
        assert response.headers["content-type"].startswith("text/event-stream")
        events = fastapi_app.read_events(response.text)
        assert [name for name, _ in events] == ["state", "progress", "progress", "progress",
                                                "progress", "completed"]
        assert events[0][1]["state"] == "active"
        assert events[0][1]["progress"] == {"stage": 1, "name": "query", "percent": 0}
        assert [data["name"] for name, data in events if name == "progress"] == [
            "aggregate", "render", "upload", "done"]
        result = {"account": "acme", "months": 3,
                  "url": f"https://reports.example.com/{job_id}.pdf"}
        assert events[-1][1]["result"] == result

        final = (await http.get(f"/reports/{job_id}")).json()
        assert (final["state"], final["result"], final["error"]) == ("completed", result, None)
        # a finished job's stream is its state and its end
        again = fastapi_app.read_events((await http.get(f"/reports/{job_id}/events")).text)
        assert [name for name, _ in again] == ["state", "completed"]

        assert (await http.get("/reports/no-such-job")).status_code == 404
        assert (await http.get("/reports/bad%20id")).status_code == 404
        assert (await http.get("/reports/no-such-job/events")).status_code == 404
        assert (await http.post("/reports", json={"account": "", "months": 3})).status_code == 422


def test_flask_app_enqueues_with_the_blocking_producer(shunter_queue_name: str) -> None:
    app = flask_app.create_app(shunter_queue_name, REDIS_URL)
    client = app.test_client()
    thumbnails = app.extensions["shunter"]
    try:
        accepted = client.post("/thumbnails", json={"image": "cat.png", "width": 64,
                                                    "request_id": "r1"})
        assert accepted.status_code == 202 and accepted.json["state"] == "waiting"
        job_id = accepted.json["id"]
        assert assert_enqueued_sync(thumbnails, flask_app.make_thumbnail,
                                    {"image": "cat.png", "width": 64}).id == job_id == "thumb-r1"
        repeated = client.post("/thumbnails", json={"image": "cat.png", "width": 64,
                                                    "request_id": "r1"})
        assert (repeated.status_code, repeated.json["id"]) == (200, job_id)
        assert client.get(f"/thumbnails/{job_id}").json["state"] == "waiting"
        broken = client.post("/thumbnails", json={"image": "notes.txt"}).json["id"]

        with worker_thread(flask_app.worker([shunter_queue_name], REDIS_URL)):
            assert thumbnails.wait(job_id, timeout=10) == {"thumbnail": "cat.64.png", "width": 64}
            with pytest.raises(shunter.JobFailed):
                thumbnails.wait(broken, timeout=10)

        done = client.get(f"/thumbnails/{job_id}")
        assert done.status_code == 200
        assert done.json == {"id": job_id, "state": "completed",
                             "progress": {"percent": 50, "message": "resizing cat.png"},
                             "result": {"thumbnail": "cat.64.png", "width": 64}, "error": None}
        failed = client.get(f"/thumbnails/{broken}").json
        assert (failed["state"], failed["error"]) == (
            "failed", "UnrecoverableError: 'notes.txt' is not an image")

        assert client.post("/thumbnails", json={"width": 64}).status_code == 400
        assert client.post("/thumbnails", json={"image": "a.png", "width": 8}).status_code == 400
        bad_id = client.post("/thumbnails", json={"image": "a.png", "request_id": "no spaces"})
        assert bad_id.status_code == 400 and "invalid job id" in bad_id.json["error"]
        assert client.get("/thumbnails/no-such-job").status_code == 404
    finally:
        thumbnails.close()
