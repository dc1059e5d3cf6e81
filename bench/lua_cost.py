"""Server cost of the hot path's scripts, counted in CPU instructions: load-independent.

Starts a private redis-server under callgrind, runs each workload through the real
scripts of the shunter on PYTHONPATH, and prints, per workload, the instructions the
server executed inside EVALSHA (``evalGenericCommand``, inclusive) and in all, per job.
Compare two versions by running this twice with different PYTHONPATHs:

    PYTHONPATH=<dir>/src:. python -m bench.lua_cost [-n 20000] [--port 6391]
                                                    [--server valkey-server] [--keep DIR]

Workloads: ``enqueue_one`` (n one-job ``Queue.add``), ``enqueue_bulk`` (n jobs by
``add_bulk`` of 1,000), ``drain_25`` (complete 25 + claim 25 per call, what a worker of
concurrency 50 sends), ``drain_1`` (complete 1 + claim 1 per call, n/4 jobs) and
``drain_worker`` (a burst ``Worker``, concurrency 50: its batches depend on timing, so
its figure varies a little). Takes about 5 minutes for n = 20,000.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio

from shunter import Job, Queue, Worker


def annotate(path: str) -> tuple[int, int]:
    """Total instructions of a callgrind dump, and those inside evalGenericCommand."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", path],
                         capture_output=True, text=True, check=True).stdout
    total = evalc = 0
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) .*PROGRAM TOTALS", line)
        if m:
            total = int(m.group(1).replace(",", ""))
        m = re.match(r"\s*([\d,]+) \(.*\)\s+\S*:evalGenericCommand\b", line) or \
            re.match(r"\s*([\d,]+) \S*:evalGenericCommand\b", line)
        if m and not evalc:
            evalc = int(m.group(1).replace(",", ""))
    return total, evalc


class Server:
    def __init__(self, binary: str, port: int, workdir: str) -> None:
        self.port, self.workdir = port, workdir
        self.proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={workdir}/cg.out",
             binary, "--port", str(port), "--save", "", "--appendonly", "no",
             "--bind", "127.0.0.1", "--dir", workdir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.parts = 0

    def control(self, flag: str) -> None:
        subprocess.run(["callgrind_control", flag, str(self.proc.pid)], check=True,
                       stdout=subprocess.DEVNULL)

    def dump(self, keep: str = "") -> tuple[int, int]:
        """Instructions since the last dump (which zeroes the counters); with ``keep``, the
        dump is copied there for callgrind_annotate."""
        before = set(glob.glob(f"{self.workdir}/cg.out.*"))
        self.control("-d")
        for _ in range(600):
            new = set(glob.glob(f"{self.workdir}/cg.out.*")) - before
            if new:
                time.sleep(0.5)
                path = new.pop()
                if keep:
                    shutil.copy(path, keep)
                return annotate(path)
            time.sleep(0.1)
        raise RuntimeError("callgrind did not dump")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


async def wait_up(client: redis.asyncio.Redis, tries: int = 600) -> None:
    """Until the server answers (valgrind makes its start slow): 0.2 s between tries."""
    for _ in range(tries):
        try:
            await client.ping()
            return
        except Exception:
            await asyncio.sleep(0.2)


async def workloads(url: str, n: int, server: Server, keep: str) -> dict[str, Any]:
    client = redis.asyncio.Redis.from_url(url)
    await wait_up(client)
    results: dict[str, Any] = {}

    async def measure(name: str, jobs: int, body: Any) -> None:
        await body(warm=True)  # scripts loaded, connections made: not counted
        await client.flushall()
        server.dump()
        await body(warm=False)
        total, evalc = server.dump(f"{keep}/{name}.callgrind" if keep else "")
        results[name] = {"jobs": jobs, "eval_ir_per_job": round(evalc / jobs),
                         "server_ir_per_job": round(total / jobs)}
        print(name, results[name], flush=True)
        await client.flushall()

    async def enqueue_one(warm: bool) -> None:
        q = Queue("cost", url)
        for i in range(10 if warm else n):
            await q.add("noop", {"i": i})
        await q.close()

    async def enqueue_bulk(warm: bool) -> None:
        q = Queue("cost", url)
        for start in range(0, 10 if warm else n, 1000):
            await q.add_bulk([{"task": "noop", "data": {"i": i}}
                              for i in range(start, min(start + 1000, 10 if warm else n))])
        await q.close()

    async def fill(q: Queue, count: int) -> None:
        for start in range(0, count, 1000):
            await q.add_bulk([{"task": "noop", "data": {"i": i}}
                              for i in range(start, min(start + 1000, count))])

    def drain(batch: int, count: int) -> Any:
        async def body(warm: bool) -> None:
            q = Queue("cost", url)
            jobs = 2 * batch if warm else count
            await fill(q, jobs)
            if not warm:
                server.dump()  # the fill is not counted
            storage = q.storage
            held = (await storage.claim(batch, 30_000, "w")).jobs
            done = 0
            while held:
                acks = [(j[b"id"].decode(), int(j[b"token"]), b"null") for j in held]
                done += len(acks)
                _, claimed = await storage.complete_many(acks, claim=batch, lease_ms=30_000,
                                                         worker_id="w")
                held = claimed.jobs
            assert done == jobs, (done, jobs)
            await q.close()
        return body

    async def drain_worker(warm: bool) -> None:
        q = Queue("cost", url)
        jobs = 100 if warm else n
        await fill(q, jobs)
        await q.close()
        if not warm:
            server.dump()

        async def noop(job: Job) -> None:
            pass

        worker = Worker("cost", {"noop": noop}, url, concurrency=50, lease=30)
        await worker.run(burst=True, handle_signals=False)
        assert worker.counters["completed"] == jobs, worker.counters

    await measure("enqueue_one", n, enqueue_one)
    await measure("enqueue_bulk", n, enqueue_bulk)
    await measure("drain_25", n, drain(25, n))
    await measure("drain_1", n // 4, drain(1, n // 4))
    await measure("drain_worker", n, drain_worker)
    await client.aclose()
    return results


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("-n", type=int, default=20_000)
    p.add_argument("--port", type=int, default=6391)
    p.add_argument("--server", default="redis-server", help="the server binary (default: redis-server)")
    p.add_argument("--out", default="", help="write the figures to this JSON file")
    p.add_argument("--keep", default="", help="keep each workload's callgrind dump in this folder")
    a = p.parse_args()
    if not shutil.which("valgrind"):
        raise SystemExit("needs valgrind (callgrind)")
    workdir = tempfile.mkdtemp(prefix="lua-cost-")
    server = Server(a.server, a.port, workdir)
    try:
        results = asyncio.run(workloads(f"redis://127.0.0.1:{a.port}/0", a.n, server, a.keep))
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    import shunter
    results["source"] = str(Path(shunter.__file__).parent)
    print(json.dumps(results))
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
