"""Flask + shunter: a view enqueues a thumbnail job with the blocking producer
(``shunter.sync.Queue``: no event loop in the web process) and answers 202 with its id; a
status view shows the job's state, progress and result. The worker runs the same tasks in
its own process (``shunter worker``).

    flask --app examples.flask_app run                 # the web app
    shunter worker examples.flask_app:worker           # the worker, from the repository root
    curl -X POST localhost:5000/thumbnails -H 'content-type: application/json' \\
         -d '{"image": "cat.png", "width": 128}'       # {"id": "...", "state": "waiting", ...}
    curl localhost:5000/thumbnails/ID

Run on its own, it drives the app with Flask's test client and starts ``shunter worker``
as a subprocess, on a queue of its own that it deletes at the end:

    .venv/bin/python examples/flask_app.py

A ``request_id`` in the request makes the enqueue idempotent: the job id is derived from
it, so a client that retries gets the same job back (200 instead of 202).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from flask import Flask, request

import shunter
import shunter.sync

# The server: $SHUNTER_REDIS_URL, else (None) shunter's embedded server in ./.shunter,
# started on first use and left running for the next run (`shunter server stop` ends it).
REDIS_URL = os.environ.get("SHUNTER_REDIS_URL")
QUEUE = "thumbnails"
ROOT = Path(__file__).resolve().parent.parent  # where `examples.flask_app` is importable

tasks = shunter.Tasks(queue=QUEUE)


# -- the worker side ---------------------------------------------------------------------------
@tasks.task("thumbnails.make", timeout=60, max_attempts=3)
def make_thumbnail(job: shunter.Job) -> dict[str, Any]:
    """A sync handler: it runs in one of the worker's threads."""
    image, width = job.data["image"], job.data["width"]
    if not image.lower().endswith((".png", ".jpg", ".jpeg")):
        raise shunter.UnrecoverableError(f"{image!r} is not an image")  # no retry
    job.update_progress_sync({"percent": 50, "message": f"resizing {image}"})
    time.sleep(0.05)  # the resizing
    stem, _, ext = image.rpartition(".")
    return {"thumbnail": f"{stem}.{width}.{ext}", "width": width}


def worker(queues: list[str] | None = None, redis: str | None = None) -> shunter.Worker:
    """The worker of these tasks (``shunter worker examples.flask_app:worker``)."""
    return shunter.Worker(queues or tasks.queues, tasks, redis, concurrency=4)


# -- the web side ------------------------------------------------------------------------------
def view(job: shunter.sync.Job) -> dict[str, Any]:
    return {"id": job.id, "state": job.state.value if job.state else None,
            "progress": job.progress, "result": job.result,
            "error": f"{job.error.type}: {job.error.message}" if job.error else None}


def create_app(queue: str = QUEUE, redis: str | None = REDIS_URL) -> Flask:
    """The app, on ``queue`` at ``redis`` (tests give their own)."""
    app = Flask(__name__)
    # One blocking queue per process: it is safe to share between request threads.
    thumbnails = shunter.sync.Queue(queue, redis)
    app.extensions["shunter"] = thumbnails

    @app.post("/thumbnails")
    def request_thumbnail() -> tuple[dict[str, Any], int]:
        body = request.get_json(silent=True) or {}
        image, width = body.get("image"), body.get("width", 128)
        if not isinstance(image, str) or not isinstance(width, int) or not 16 <= width <= 1024:
            return {"error": "image must be a file name and width an int from 16 to 1024"}, 400
        request_id = body.get("request_id")
        try:
            job = thumbnails.add(make_thumbnail, {"image": image, "width": width},
                                 job_id=f"thumb-{request_id}" if request_id else None)
        except shunter.InvalidInput as exc:  # e.g. a request_id with characters ids refuse
            return {"error": str(exc)}, 400
        return {**view(job), "status_url": f"/thumbnails/{job.id}"}, 200 if job.existing else 202

    @app.get("/thumbnails/<job_id>")
    def thumbnail_status(job_id: str) -> tuple[dict[str, Any], int]:
        try:
            job = thumbnails.get_job(job_id)
        except shunter.InvalidInput:
            job = None
        if job is None:
            return {"error": f"no thumbnail job {job_id!r}"}, 404
        return view(job), 200

    return app


# -- the standalone run ------------------------------------------------------------------------
def main() -> None:
    name = f"thumbnails-{uuid.uuid4().hex[:8]}"
    print(f"queue: {name}")
    app = create_app(name, REDIS_URL)
    client = app.test_client()
    began = time.perf_counter()
    accepted = client.post("/thumbnails", json={"image": "cat.png", "width": 128,
                                                "request_id": "req-1"})
    took = (time.perf_counter() - began) * 1000
    job_id = accepted.json["id"]
    print(f"POST /thumbnails -> {accepted.status_code} in {took:.1f} ms: job {job_id} "
          f"({accepted.json['state']})")
    again = client.post("/thumbnails", json={"image": "cat.png", "width": 128,
                                             "request_id": "req-1"})
    print(f"the same request_id again -> {again.status_code}, job {again.json['id']}")
    broken = client.post("/thumbnails", json={"image": "notes.txt"}).json["id"]
    invalid = client.post("/thumbnails", json={"width": "big"})
    print(f"no image -> {invalid.status_code}: {invalid.json['error']}")

    command = [sys.executable, "-m", "shunter.cli", "worker", "examples.flask_app:worker",
               "--queues", name, "--log-level", "warning"]
    if REDIS_URL:
        command += ["--redis", REDIS_URL]
    started = subprocess.Popen(command, cwd=ROOT)
    try:
        thumbnails = app.extensions["shunter"]
        for job in (job_id, broken):
            with contextlib.suppress(shunter.JobFailed):  # the status view says why
                thumbnails.wait(job, timeout=30)
            status = client.get(f"/thumbnails/{job}").json
            print(f"GET /thumbnails/{job[:12]} -> {status['state']}: "
                  f"{status['result'] or status['error']}")
        missing = client.get("/thumbnails/no-such-job")
        print(f"unknown job -> {missing.status_code}")
        final = client.get(f"/thumbnails/{job_id}").json
        print(f"summary: accepted={accepted.status_code} repeated={again.status_code} "
              f"final={final['state']} invalid={invalid.status_code} "
              f"not_found={missing.status_code}")
    finally:
        started.terminate()  # SIGTERM: the worker finishes what it runs, then exits
        started.wait(timeout=30)
        app.extensions["shunter"].close()

    async def cleanup() -> None:
        async with shunter.Queue(name, REDIS_URL) as queue:
            await queue.obliterate(force=True)

    asyncio.run(cleanup())


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    main()
