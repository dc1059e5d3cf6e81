"""FastAPI + shunter: an endpoint enqueues a report job and answers 202 with its id in
milliseconds; another shows the job's state, progress and result; a third streams its
progress as server-sent events. The worker runs the same tasks (one ``shunter.Tasks``
registry) in its own process.

    uvicorn examples.fastapi_app:app                 # the API (pip install uvicorn)
    shunter worker examples.fastapi_app:worker       # the worker, from the repository root
    curl -X POST localhost:8000/reports -H 'content-type: application/json' \\
         -d '{"account": "acme", "months": 3}'       # {"id": "...", "state": "waiting", ...}
    curl localhost:8000/reports/ID                    # state, progress, result
    curl -N localhost:8000/reports/ID/events          # the progress, live

Run on its own, it drives the app in process through httpx's ASGI transport, with a worker
on the same event loop, on a queue of its own that it deletes at the end:

    .venv/bin/python examples/fastapi_app.py

The app opens one ``shunter.Queue`` in its lifespan and enqueues through the registered
task (``reports.add(build_report, ...)``), so a typo in a task name fails at import.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, Field

import shunter
from shunter.events import progress_of

# The server: $SHUNTER_REDIS_URL, else (None) shunter's embedded server in ./.shunter,
# started on first use and left running for the next run (`shunter server stop` ends it).
REDIS_URL = os.environ.get("SHUNTER_REDIS_URL")
QUEUE = "reports"
STAGES = ("query", "aggregate", "render", "upload")
FINISHED = {state.value for state in shunter.states.TERMINAL_STATES}

tasks = shunter.Tasks(queue=QUEUE)


# -- the worker side ---------------------------------------------------------------------------
async def run_stage(name: str, data: dict[str, Any]) -> None:
    """One stage of the work (a database query, a PDF rendering ...); here, a pause."""
    await asyncio.sleep(0.05)


@tasks.task("reports.build", timeout=300, max_attempts=3)
async def build_report(job: shunter.Job) -> dict[str, Any]:
    """Four stages, each announced as structured progress before it runs."""
    for number, name in enumerate(STAGES, start=1):
        percent = round(100 * (number - 1) / len(STAGES))
        await job.update_progress({"stage": number, "name": name, "percent": percent})
        await run_stage(name, job.data)
    await job.update_progress({"stage": len(STAGES), "name": "done", "percent": 100})
    return {"account": job.data["account"], "months": job.data["months"],
            "url": f"https://reports.example.com/{job.id}.pdf"}


def worker(queues: list[str] | None = None, redis: str | None = None) -> shunter.Worker:
    """The worker of these tasks (``shunter worker examples.fastapi_app:worker``). A
    function, so that importing the app (uvicorn does) connects to nothing."""
    return shunter.Worker(queues or tasks.queues, tasks, redis, concurrency=10)


# -- the HTTP side -----------------------------------------------------------------------------
class ReportRequest(BaseModel):
    account: str = Field(min_length=1, max_length=100)
    months: int = Field(ge=1, le=24)


def reports_queue(request: Request) -> shunter.Queue:
    queue: shunter.Queue = request.app.state.reports
    return queue


Reports = Annotated[shunter.Queue, Depends(reports_queue)]


async def find_job(job_id: str, reports: Reports) -> shunter.Job:
    try:
        job = await reports.get_job(job_id)
    except shunter.InvalidInput:  # not even a well-formed id
        job = None
    if job is None:
        raise HTTPException(status_code=404, detail=f"no report job {job_id!r}")
    return job


FoundJob = Annotated[shunter.Job, Depends(find_job)]


def view(job: shunter.Job) -> dict[str, Any]:
    """What a client sees of a job."""
    return {"id": job.id, "state": job.state.value if job.state else None,
            "attempt": job.attempt, "progress": job.progress, "result": job.result,
            "error": f"{job.error.type}: {job.error.message}" if job.error else None}


router = APIRouter()


@router.post("/reports", status_code=202)
async def request_report(body: ReportRequest, reports: Reports) -> dict[str, Any]:
    """Enqueue (one round trip) and answer at once; the worker does the rest."""
    job = await reports.add(build_report, body.model_dump())
    return {**view(job), "status_url": f"/reports/{job.id}",
            "events_url": f"/reports/{job.id}/events"}


@router.get("/reports/{job_id}")
async def report_status(job: FoundJob) -> dict[str, Any]:
    return view(job)


@router.get("/reports/{job_id}/events", response_class=EventSourceResponse)
async def report_events(job: FoundJob, request: Request) -> AsyncIterator[ServerSentEvent]:
    """``state`` (the job now), one ``progress`` per report, then ``completed``, ``failed``
    or ``cancelled`` with the final job; the stream ends with the job."""
    async with shunter.QueueEvents(job.queue, request.app.state.redis) as events:
        # The stream's cursor is fixed on entering: read the job after it, and no event
        # between this snapshot and the first read is missed.
        await job.refresh()
        yield ServerSentEvent(event="state", data=view(job))
        if not job.finished:
            async for event in events:
                if event.job_id != job.id:
                    continue
                if event.name == "progress":
                    progress = progress_of(event)
                    if progress is None:  # too large for the event: read it from the job
                        progress = (await job.refresh()).progress
                    yield ServerSentEvent(event="progress", data=progress, id=event.id)
                elif event.state in FINISHED:
                    break
            await job.refresh()
    yield ServerSentEvent(event=job.state.value if job.state else "gone", data=view(job))


def create_app(queue: str = QUEUE, redis: str | None = REDIS_URL) -> FastAPI:
    """The app, on ``queue`` at ``redis`` (tests give their own)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with shunter.Queue(queue, redis) as reports:  # one connection pool per process
            await reports.settings()  # connect now: an unreachable server fails the start
            app.state.reports = reports
            app.state.redis = redis
            yield

    app = FastAPI(title="reports", lifespan=lifespan)
    app.include_router(router)
    return app


app = create_app()


# -- a client, for the standalone run ------------------------------------------------------------
def read_events(text: str) -> list[tuple[str, Any]]:
    """``(event, data)`` pairs of a text/event-stream body (what a browser's EventSource
    hands to its listeners)."""
    parsed = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines()
                      if ": " in line and not line.startswith(":"))
        if "data" in fields:
            parsed.append((fields.get("event", "message"), json.loads(fields["data"])))
    return parsed


async def main() -> None:
    import httpx  # the client of this run only; the app does not need it

    name = f"reports-{uuid.uuid4().hex[:8]}"
    print(f"queue: {name}")
    service = create_app(name, REDIS_URL)
    running = worker([name], REDIS_URL)
    work = asyncio.create_task(running.run(handle_signals=False))
    try:
        async with service.router.lifespan_context(service), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=service), base_url="http://reports.local") as http:
            began = time.perf_counter()
            accepted = await http.post("/reports", json={"account": "acme", "months": 3})
            took = (time.perf_counter() - began) * 1000
            job_id = accepted.json()["id"]
            print(f"POST /reports -> {accepted.status_code} in {took:.1f} ms: job {job_id} "
                  f"({accepted.json()['state']})")
            now = (await http.get(f"/reports/{job_id}")).json()
            print(f"GET /reports/{job_id[:8]}... -> {now['state']}, progress {now['progress']}")
            # The ASGI transport hands over the body once the stream ends (with the job);
            # a browser's EventSource gets each event as it is sent.
            stream = await http.get(f"/reports/{job_id}/events")
            events = read_events(stream.text)
            for event, data in events:
                shown = data if event == "progress" else f"{data['state']}, progress {data['progress']}"
                print(f"  event {event:9} {shown}")
            final = (await http.get(f"/reports/{job_id}")).json()
            print(f"GET /reports/{job_id[:8]}... -> {final['state']}: {final['result']}")
            missing = await http.get("/reports/no-such-job")
            invalid = await http.post("/reports", json={"account": "acme", "months": 99})
            print(f"unknown job -> {missing.status_code}, months=99 -> {invalid.status_code}")
            print(f"summary: accepted={accepted.status_code} final={final['state']} "
                  f"last_event={events[-1][0]} not_found={missing.status_code}")
    finally:
        await running.close()
        await work
        async with shunter.Queue(name, REDIS_URL) as queue:
            await queue.obliterate(force=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main())
