"""shunter's side of each workload, run in its own process so CPU time and round trips
are the worker's alone. Prints one JSON line."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import resource
import time
from typing import Any

import redis.asyncio.connection

from shunter import Job, Queue, Worker

ROUND_TRIPS = 0
_send = redis.asyncio.connection.AbstractConnection.send_packed_command


async def _counting_send(self: Any, command: Any, check_health: bool = True) -> None:
    global ROUND_TRIPS
    ROUND_TRIPS += 1  # one packed send = one round trip (a pipeline sends once)
    await _send(self, command, check_health)


redis.asyncio.connection.AbstractConnection.send_packed_command = _counting_send  # type: ignore[method-assign]


def cpu_ms() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return (r.ru_utime + r.ru_stime) * 1000


async def enqueue(url: str, queue: str, n: int, bulk: int, payload: int) -> dict[str, Any]:
    q = Queue(queue, url)
    data = "x" * payload
    cpu0, rt0, t0 = cpu_ms(), ROUND_TRIPS, time.perf_counter()
    if bulk:
        for start in range(0, n, bulk):
            await q.add_bulk([{"task": "noop", "data": {"i": i, "p": data} if payload else {"i": i}}
                              for i in range(start, min(start + bulk, n))])
    else:
        for i in range(n):
            await q.add("noop", {"i": i, "p": data} if payload else {"i": i})
    elapsed = time.perf_counter() - t0
    counts = await q.counts()
    await q.close()
    assert counts["waiting"] == n, counts
    return {"jobs": n, "elapsed": elapsed, "cpu_ms": cpu_ms() - cpu0, "round_trips": ROUND_TRIPS - rt0}


async def drain(url: str, queue: str, n: int, concurrency: int, mode: str,
                until_empty: bool) -> dict[str, Any]:
    seen = bytearray(n)
    latencies: list[float] = []

    async def noop(job: Job) -> None:
        seen[job.data["i"]] += 1

    async def sleep(job: Job) -> None:
        seen[job.data["i"]] += 1
        await asyncio.sleep(0.01)

    def sync_noop(job: Job) -> None:
        seen[job.data["i"]] += 1

    async def stamp(job: Job) -> None:
        latencies.append(time.time() - job.data["t"])
        seen[job.data["i"]] += 1

    handler = {"noop": noop, "sleep": sleep, "sync": sync_noop, "latency": stamp}[mode]
    worker = Worker(queue, {"noop": handler}, url, concurrency=concurrency, lease=30)
    gc.freeze()  # as `shunter worker` does once the app is loaded
    done = asyncio.Event()

    async def watch() -> None:
        if until_empty:  # several processes share the queue: stop when it is empty
            while True:
                counts = await worker.storage.counts()
                if counts["waiting"] == 0 and counts["active"] == 0 and counts["scheduled"] == 0:
                    break
                await asyncio.sleep(0.005)
        else:
            while worker.counters["completed"] < n:
                await asyncio.sleep(0.001)
        done.set()

    runner = asyncio.create_task(worker.run(handle_signals=False))
    watcher = asyncio.create_task(watch())
    print(json.dumps({"ready": True}), flush=True)
    cpu0, rt0, t0 = cpu_ms(), ROUND_TRIPS, time.perf_counter()
    await done.wait()
    elapsed = time.perf_counter() - t0
    cpu, rts = cpu_ms() - cpu0, ROUND_TRIPS - rt0
    await worker.close()
    await runner
    watcher.cancel()
    result: dict[str, Any] = {
        "jobs": n, "elapsed": elapsed, "cpu_ms": cpu, "round_trips": rts,
        "executions": sum(seen), "duplicated": sum(1 for s in seen if s > 1),
        "missing": 0 if until_empty else sum(1 for s in seen if s == 0),
        "lease_lost": worker.counters["lease_lost"],
    }
    if latencies:
        result["latencies"] = latencies
    return result


async def fill(url: str, queue: str, n: int, payload: int, spaced: float) -> dict[str, Any]:
    """Put n jobs in the queue (not timed): in chunks of 1,000, or one every `spaced`
    seconds carrying the time they were sent (the latency workload)."""
    q = Queue(queue, url)
    data = "x" * payload
    if spaced:
        await q.storage.client.ping()  # connect before timing, as the peers' producers do
        next_at = time.perf_counter()
        for i in range(n):
            await q.add("noop", {"i": i, "t": time.time()})
            next_at += spaced
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    else:
        for start in range(0, n, 1000):
            await q.add_bulk([{"task": "noop", "data": {"i": i, "p": data} if payload else {"i": i}}
                              for i in range(start, min(start + 1000, n))])
    await q.close()
    return {"filled": n}


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    p = argparse.ArgumentParser()
    p.add_argument("action", choices=["enqueue", "fill", "drain"])
    p.add_argument("--url", required=True)
    p.add_argument("--queue", required=True)
    p.add_argument("-n", type=int, required=True)
    p.add_argument("--bulk", type=int, default=0)
    p.add_argument("--payload", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--mode", default="noop")
    p.add_argument("--until-empty", action="store_true")
    p.add_argument("--uvloop", action="store_true")
    p.add_argument("--spaced", type=float, default=0.0)
    a = p.parse_args()
    if a.uvloop:
        import uvloop
        uvloop.install()
    if a.action == "enqueue":
        out = asyncio.run(enqueue(a.url, a.queue, a.n, a.bulk, a.payload))
    elif a.action == "fill":
        out = asyncio.run(fill(a.url, a.queue, a.n, a.payload, a.spaced))
    else:
        out = asyncio.run(drain(a.url, a.queue, a.n, a.concurrency, a.mode, a.until_empty))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
