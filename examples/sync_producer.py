"""A blocking producer (Django, Flask, scripts) with shunter.sync.Queue, and a worker in a
separate process that shuts down gracefully on SIGTERM.

The parent process is plain sync code, with no event loop: it starts ``python
sync_producer.py --worker NAME``, enqueues jobs, waits for results (the jobs it gets are
``shunter.sync.Job`` objects, whose methods block), replays a dead letter, then sends
SIGTERM while a slow job runs; the worker lets that job finish before it exits (as during
a deploy).

    .venv/bin/python examples/sync_producer.py
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
import uuid

import shunter
import shunter.sync
from shunter import Job, JobFailed

# The server: $SHUNTER_REDIS_URL, else (None) shunter's embedded server in ./.shunter,
# started on first use and left running for the next run (`shunter server stop` ends it).
REDIS_URL = os.environ.get("SHUNTER_REDIS_URL")


# -- the worker process -------------------------------------------------------------------
def resize(job: Job) -> dict[str, object]:
    """A sync handler (it runs in the worker's thread pool)."""
    image, width = job.data["image"], job.data["width"]
    job.log_sync(f"attempt {job.attempt}: {image!r} to {width} px")
    if not isinstance(image, str) or job.data.get("corrupt"):
        raise shunter.UnrecoverableError(f"cannot read image {image!r}")
    job.update_progress_sync({"percent": 50, "message": f"resizing {image}"})
    time.sleep(0.05)
    return {"image": image, "thumbnail": image.replace(".", f".{width}."), "width": width}


async def slow(job: Job) -> str:
    await asyncio.sleep(1.0)
    return "finished although the worker was asked to stop"


def run_worker(queue_name: str) -> None:
    worker = shunter.Worker(queue_name, {"resize": resize, "slow": slow}, REDIS_URL,
                            concurrency=4)
    print("[worker] started", flush=True)
    asyncio.run(worker.run())  # handles SIGTERM / SIGINT: finish in-flight jobs, then return
    print(f"[worker] stopped gracefully: {dict(worker.counters)}", flush=True)


# -- the producer: plain sync code --------------------------------------------------------
def produce(queue_name: str) -> None:
    worker = subprocess.Popen([sys.executable, __file__, "--worker", queue_name])
    try:
        with shunter.sync.Queue(queue_name, REDIS_URL) as queue:
            job = queue.add("resize", {"image": "cat.png", "width": 200})
            print(f"enqueued {job.id} ({job.state}); result: {job.wait(timeout=10)}")
            print(f"snapshot: state={job.state} progress={job.progress} logs={job.logs()}")

            batch = queue.add_bulk([{"task": "resize", "data": {"image": f"dog{i}.png", "width": 64}}
                                    for i in range(5)])
            thumbs = [queue.wait(j.id, timeout=10)["thumbnail"] for j in batch]
            print(f"bulk of {len(batch)} in one round trip: {thumbs}")

            first = queue.add("resize", {"image": "cat.png", "width": 96}, job_id="thumb-cat-96")
            second = queue.add("resize", {"image": "cat.png", "width": 96}, job_id="thumb-cat-96")
            print(f"same job_id twice: existing={first.existing}, then existing={second.existing}")

            later = queue.add("resize", {"image": "owl.png", "width": 32}, delay=60)
            print(f"scheduled job cancelled at once: {later.cancel(by='script')}")
            later.replay()  # failed and cancelled jobs (dead letters) run again from attempt 1
            print(f"replayed the cancelled job: {later.wait(timeout=10)}")

            bad = queue.add("resize", {"image": "owl.png", "width": 32, "corrupt": True})
            try:
                bad.wait(timeout=10)
            except JobFailed as exc:
                print(f"dead letter: {exc}")
            print(f"failed jobs: {queue.job_ids('failed')}; missing id: {queue.get_job('nope')}")

            slow_job = queue.add("slow")
            while slow_job.refresh().state != "active":
                time.sleep(0.02)
            print("slow job is active; sending SIGTERM to the worker (a deploy)")
            worker.send_signal(signal.SIGTERM)
            print(f"worker exited with {worker.wait(timeout=20)}")
            final = slow_job.refresh()
            print(f"slow job after shutdown: {final.state}, result {final.result!r}")
            counts = queue.counts()
            print(f"summary: completed={counts['completed']} failed={counts['failed']} "
                  f"cancelled={counts['cancelled']}")
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()

    async def cleanup() -> None:  # drain, clean, obliterate live on the asyncio Queue
        async with shunter.Queue(queue_name, REDIS_URL) as queue:
            await queue.obliterate(force=True)

    asyncio.run(cleanup())


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        run_worker(sys.argv[2])
    else:
        name = f"sync-producer-{uuid.uuid4().hex[:8]}"
        print(f"queue: {name}")
        produce(name)
