"""Run every workload against a Redis started for the benchmark; print and save results.

    python -m bench.run [--runs 3] [--quick] [--peer PATH_TO_PEER_PYTHON] [--out bench/results.json]

Each figure is the median of --runs runs. Throughputs are also given as a fraction of
Redis's own ceiling measured in the same run (redis-benchmark, 50 clients).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis

import shunter
from shunter import Queue

from .server import BenchServer, ceiling

HERE = Path(__file__).resolve().parent


def _worker(args: list[str], python: str = sys.executable, module: str = "bench.shunter_side") -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    return subprocess.Popen([python, "-m", module, *args], stdout=subprocess.PIPE, text=True,
                            env=env, cwd=HERE.parent)


def _result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark process failed ({proc.returncode}): {out[-500:]}")
    return json.loads(out.strip().splitlines()[-1])


def _ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if '"ready"' not in line:
        raise RuntimeError(f"worker did not start: {line!r}")


def fill(url: str, queue: str, n: int, payload: int = 0, latency: bool = False) -> None:
    async def go() -> None:
        q = Queue(queue, url)
        data = "x" * payload
        for start in range(0, n, 1000):
            await q.add_bulk([{"task": "noop", "data": {"i": i, "p": data} if payload else {"i": i}}
                              for i in range(start, min(start + 1000, n))])
        await q.close()
    asyncio.run(go())


def produce_spaced(url: str, queue: str, n: int, gap: float) -> None:
    async def go() -> None:
        q = Queue(queue, url)
        next_at = time.perf_counter()
        for i in range(n):
            await q.add("noop", {"i": i, "t": time.time()})
            next_at += gap
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        await q.close()
    asyncio.run(go())


class Bench:
    def __init__(self, server: BenchServer, uvloop: bool) -> None:
        self.server = server
        self.url = server.url
        self.uvloop = ["--uvloop"] if uvloop else []

    def _q(self) -> str:
        return "bench-" + uuid.uuid4().hex[:8]

    def enqueue(self, n: int, bulk: int) -> dict[str, Any]:
        self.server.flush()
        return _result(_worker(["enqueue", "--url", self.url, "--queue", self._q(), "-n", str(n),
                                "--bulk", str(bulk), *self.uvloop]))

    def drain(self, n: int, mode: str = "noop", concurrency: int = 50, payload: int = 0,
              processes: int = 1) -> dict[str, Any]:
        self.server.flush()
        queue = self._q()
        fill(self.url, queue, n, payload)
        before = self.server.commands_processed()
        args = ["drain", "--url", self.url, "--queue", queue, "-n", str(n), "--mode", mode,
                "--concurrency", str(concurrency), *self.uvloop]
        if processes > 1:
            args.append("--until-empty")
        procs = [_worker(args) for _ in range(processes)]
        for p in procs:
            _ready(p)
        results = [_result(p) for p in procs]
        server_cmds = self.server.commands_processed() - before
        merged = {
            "jobs": n, "elapsed": max(r["elapsed"] for r in results),
            "cpu_ms": sum(r["cpu_ms"] for r in results),
            "round_trips": sum(r["round_trips"] for r in results),
            "executions": sum(r["executions"] for r in results),
            "duplicated": sum(r["duplicated"] for r in results),
            "lease_lost": sum(r["lease_lost"] for r in results),
            "server_commands": server_cmds,
        }
        if merged["executions"] != n or merged["duplicated"]:
            raise AssertionError(f"not exactly once: {merged}")
        return merged

    def latency(self, n: int = 500, gap: float = 0.005) -> dict[str, Any]:
        self.server.flush()
        queue = self._q()
        proc = _worker(["drain", "--url", self.url, "--queue", queue, "-n", str(n), "--mode",
                        "latency", *self.uvloop])
        _ready(proc)
        time.sleep(0.5)  # let the worker go idle (blocked on the server) before producing
        produce_spaced(self.url, queue, n, gap)
        r = _result(proc)
        lat = sorted(r.pop("latencies"))
        q = statistics.quantiles(lat, n=100)
        r.update(p50_ms=q[49] * 1000, p95_ms=q[94] * 1000, p99_ms=q[98] * 1000)
        return r


def median_of(runs: int, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    results = [fn(*args, **kwargs) for _ in range(runs)]
    for r in results:
        r["rate"] = r["jobs"] / r["elapsed"]
    best = sorted(results, key=lambda r: r["rate"])[len(results) // 2]
    best["rates"] = [round(r["rate"]) for r in results]
    return best


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="tenth-size workloads, one run")
    p.add_argument("--uvloop", action="store_true")
    p.add_argument("--only", default="")
    p.add_argument("--out", default=str(HERE / "results.json"))
    a = p.parse_args()
    scale = 10 if a.quick else 1
    runs = 1 if a.quick else a.runs
    server = BenchServer().start()
    try:
        bench = Bench(server, a.uvloop)
        results: dict[str, Any] = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform(), "redis": server.version(),
                        "shunter": shunter.__version__, "redis_py": redis.__version__,
                        "uvloop": a.uvloop},
            "ceiling": ceiling(server),
        }
        workloads = {
            "enqueue_one": lambda: median_of(runs, bench.enqueue, 20_000 // scale, 0),
            "enqueue_bulk": lambda: median_of(runs, bench.enqueue, 20_000 // scale, 1000),
            "drain_noop": lambda: median_of(runs, bench.drain, 20_000 // scale),
            "drain_sleep": lambda: median_of(runs, bench.drain, 2_000 // scale, "sleep"),
            "latency": lambda: bench.latency(500 // scale if a.quick else 500),
            "scale_4proc": lambda: median_of(runs, bench.drain, 40_000 // scale, processes=4),
            "drain_sync": lambda: median_of(runs, bench.drain, 20_000 // scale, "sync"),
            "drain_10k_payload": lambda: median_of(runs, bench.drain, 20_000 // scale, payload=10_240),
        }
        for name, run in workloads.items():
            if a.only and name not in a.only.split(","):
                continue
            results[name] = run()
            print(f"{name}: {summary(results[name], results['ceiling'])}", flush=True)
    finally:
        server.stop()
    Path(a.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {a.out}")


def summary(r: dict[str, Any], ceil: dict[str, float]) -> str:
    if "p50_ms" in r:
        return f"p50 {r['p50_ms']:.2f} ms, p95 {r['p95_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms"
    text = f"{r['rate']:,.0f} jobs/s (runs {r['rates']})"
    if ceil.get("evalsha"):
        text += f", {r['rate'] / ceil['evalsha']:.1%} of EVALSHA"
    text += f", {r['round_trips'] / r['jobs']:.3f} round trips/job, {r['cpu_ms'] / r['jobs']:.3f} CPU ms/job"
    if "server_commands" in r:
        text += f", {r['server_commands'] / r['jobs']:.1f} server cmds/job"
    return text


if __name__ == "__main__":
    main()
