"""The same workloads for a peer library (arq or saq), run with the peer's own virtualenv
(`make bench` creates bench/.venv-peer). Same actions and JSON output as shunter_side.py;
round trips are counted the same way (redis-py's asyncio send path)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import time
from typing import Any
from urllib.parse import urlparse

import redis.asyncio.connection

ROUND_TRIPS = 0
_send = redis.asyncio.connection.AbstractConnection.send_packed_command


async def _counting_send(self: Any, command: Any, check_health: bool = True) -> None:
    global ROUND_TRIPS
    ROUND_TRIPS += 1
    await _send(self, command, check_health)


redis.asyncio.connection.AbstractConnection.send_packed_command = _counting_send  # type: ignore[method-assign]


def cpu_ms() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return (r.ru_utime + r.ru_stime) * 1000


class State:
    def __init__(self, n: int) -> None:
        self.seen = bytearray(n)
        self.latencies: list[float] = []
        self.done = 0


def make_handlers(state: State, mode: str) -> tuple[Any, bool]:
    async def noop(i: int, t: float) -> None:
        if mode == "latency":
            state.latencies.append(time.time() - t)
        if mode == "sleep":
            await asyncio.sleep(0.01)
        state.seen[i] += 1
        state.done += 1

    def sync_noop(i: int, t: float) -> None:
        state.seen[i] += 1
        state.done += 1

    return (sync_noop, True) if mode == "sync" else (noop, False)


class Arq:
    name = "arq"

    def __init__(self, url: str, queue: str) -> None:
        from arq.connections import RedisSettings
        u = urlparse(url)
        self.settings = RedisSettings(host=u.hostname or "127.0.0.1", port=u.port or 6379)
        self.queue = queue

    async def producer(self) -> Any:
        from arq import create_pool
        return await create_pool(self.settings, default_queue_name=self.queue)

    async def enqueue(self, pool: Any, i: int, t: float = 0.0, p: str = "") -> None:
        await pool.enqueue_job("noop", i, t, p)

    async def close_producer(self, pool: Any) -> None:
        await pool.aclose()

    def worker(self, state: State, mode: str, concurrency: int) -> tuple[Any, Any]:
        from arq.worker import Worker, func
        handler, is_sync = make_handlers(state, mode)
        if is_sync:
            raise NotImplementedError("arq runs coroutine functions only")

        async def noop(ctx: Any, i: int, t: float, p: str) -> None:
            await handler(i, t)

        w = Worker(functions=[func(noop, name="noop")], redis_settings=self.settings,
                   queue_name=self.queue, max_jobs=concurrency, handle_signals=False,
                   poll_delay=0.001, keep_result=60)
        return w, w.async_run

    async def stop(self, w: Any) -> None:
        await w.close()


class Saq:
    name = "saq"

    def __init__(self, url: str, queue: str) -> None:
        self.url = url
        self.queue = queue

    async def producer(self) -> Any:
        from saq import Queue
        q = Queue.from_url(self.url, name=self.queue)
        await q.connect()
        return q

    async def enqueue(self, q: Any, i: int, t: float = 0.0, p: str = "") -> None:
        await q.enqueue("noop", i=i, t=t, p=p)

    async def close_producer(self, q: Any) -> None:
        await q.disconnect()

    def worker(self, state: State, mode: str, concurrency: int) -> tuple[Any, Any]:
        from saq import Queue, Worker
        handler, is_sync = make_handlers(state, mode)
        if is_sync:
            def noop(ctx: Any, *, i: int, t: float, p: str) -> None:
                handler(i, t)
        else:
            async def noop(ctx: Any, *, i: int, t: float, p: str) -> None:  # type: ignore[misc]
                await handler(i, t)
        q = Queue.from_url(self.url, name=self.queue)
        w = Worker(q, functions=[("noop", noop)], concurrency=concurrency)
        return w, w.start

    async def stop(self, w: Any) -> None:
        await w.stop()


PEERS = {"arq": Arq, "saq": Saq}


async def enqueue(peer: Any, n: int) -> dict[str, Any]:
    pool = await peer.producer()
    cpu0, rt0, t0 = cpu_ms(), ROUND_TRIPS, time.perf_counter()
    for i in range(n):
        await peer.enqueue(pool, i)
    elapsed = time.perf_counter() - t0
    result = {"jobs": n, "elapsed": elapsed, "cpu_ms": cpu_ms() - cpu0, "round_trips": ROUND_TRIPS - rt0}
    await peer.close_producer(pool)
    return result


async def fill(peer: Any, n: int, spaced: float, payload: int) -> dict[str, Any]:
    pool = await peer.producer()
    if spaced:
        next_at = time.perf_counter()
        for i in range(n):
            await peer.enqueue(pool, i, time.time())
            next_at += spaced
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    else:
        for start in range(0, n, 500):
            await asyncio.gather(*(peer.enqueue(pool, i, 0.0, "x" * payload)
                                   for i in range(start, min(start + 500, n))))
    await peer.close_producer(pool)
    return {"filled": n}


async def drain(peer: Any, n: int, concurrency: int, mode: str) -> dict[str, Any]:
    state = State(n)
    w, run = peer.worker(state, mode, concurrency)
    runner = asyncio.create_task(run())
    print(json.dumps({"ready": True}), flush=True)
    cpu0, rt0, t0 = cpu_ms(), ROUND_TRIPS, time.perf_counter()
    while state.done < n:
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - t0
    cpu, rts = cpu_ms() - cpu0, ROUND_TRIPS - rt0
    out: dict[str, Any] = {"jobs": n, "elapsed": elapsed, "cpu_ms": cpu, "round_trips": rts,
                           "executions": sum(state.seen), "duplicated": sum(1 for s in state.seen if s > 1),
                           "missing": sum(1 for s in state.seen if s == 0), "lease_lost": 0}
    if state.latencies:
        out["latencies"] = state.latencies
    # Report before stopping the peer: its shutdown (arq's close() sometimes raises
    # CancelledError here) must not void a finished measurement.
    print(json.dumps(out), flush=True)
    try:
        await peer.stop(w)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    except BaseException:  # measured already; the process exits next
        pass
    os._exit(0)


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    p = argparse.ArgumentParser()
    p.add_argument("peer", choices=sorted(PEERS))
    p.add_argument("action", choices=["enqueue", "fill", "drain"])
    p.add_argument("--url", required=True)
    p.add_argument("--queue", required=True)
    p.add_argument("-n", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--mode", default="noop")
    p.add_argument("--spaced", type=float, default=0.0)
    p.add_argument("--payload", type=int, default=0)
    a = p.parse_args()
    peer = PEERS[a.peer](a.url, a.queue)
    if a.action == "enqueue":
        out = asyncio.run(enqueue(peer, a.n))
    elif a.action == "fill":
        out = asyncio.run(fill(peer, a.n, a.spaced, a.payload))
    else:
        out = asyncio.run(drain(peer, a.n, a.concurrency, a.mode))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
