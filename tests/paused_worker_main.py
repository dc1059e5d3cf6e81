"""A worker process for tests/test_paused_worker.py (not a test module itself).

    python -m tests.paused_worker_main QUEUE REDIS_URL RECORDS {async,sync} SECONDS

Runs one Worker (concurrency 2, lease 1 s, max_stalls 1) whose ``long`` handler runs for
SECONDS. The handler appends what happens to it as JSON lines to the RECORDS file, so the
test can read them without this process's Redis connection (which a SIGSTOP freezes):
``{"event": "start" | "returned" | "cancelled" | "stopped", "job", "token", "pid", "t"}``,
``t`` being ``time.monotonic()`` (one clock for every process on the machine). The async
handler records ``cancelled`` when it gets CancelledError; the sync one polls
``job.cancelled`` and records ``stopped`` when it returns early. SIGTERM stops the worker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
import time
from typing import Any

from shunter import Job, Worker

LEASE = 1.0
CONCURRENCY = 2


def main(argv: list[str]) -> None:
    queue, url, records, mode, seconds_text = argv
    seconds = float(seconds_text)
    lock = threading.Lock()  # sync handlers record from pool threads

    def record(event: str, job: Job) -> None:
        line = json.dumps({"event": event, "job": job.id, "token": job.token,
                           "pid": os.getpid(), "t": time.monotonic()})
        with lock, open(records, "a", encoding="utf-8") as out:
            out.write(line + "\n")
            out.flush()

    async def long_async(job: Job) -> str:
        record("start", job)
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            record("cancelled", job)
            raise
        record("returned", job)
        return f"token {job.token}"

    def long_sync(job: Job) -> str:
        record("start", job)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if job.cancelled:
                record("stopped", job)
                return f"stopped early, token {job.token}"
            time.sleep(0.05)
        record("returned", job)
        return f"token {job.token}"

    handler: Any = long_async if mode == "async" else long_sync
    worker = Worker(queue, {"long": handler}, url, concurrency=CONCURRENCY, lease=LEASE,
                    max_stalls=1, shutdown_timeout=0.2, cancel_grace=1.0)
    asyncio.run(worker.run())


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(process)d %(threadName)s %(name)s: %(message)s")
    main(sys.argv[1:])
