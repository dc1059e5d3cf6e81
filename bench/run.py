"""Run every workload against a Redis started for the benchmark, for shunter and for the
peers, in the same run; print a table and save JSON.

    python -m bench.run [--runs 3] [--quick] [--uvloop] [--peers arq,saq]
                        [--peer-python bench/.venv-peer/bin/python] [--out bench/results.json]

Each figure is the median of --runs runs. Throughputs are also given as a fraction of
Redis's own ceiling measured in the same run (redis-benchmark, 50 clients).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .server import BenchServer, ceiling

HERE = Path(__file__).resolve().parent


@dataclass
class Side:
    """How to run one library's side of the workloads: a python and a module (+ args)."""

    name: str
    python: str
    module: list[str]
    extra: list[str]

    def start(self, *args: str) -> subprocess.Popen[str]:
        # The caller's PYTHONPATH stays after the bench's own root, so a worktree run with
        # PYTHONPATH=<worktree>/src measures that source, not the venv's installed copy.
        path = [str(HERE.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
        return subprocess.Popen([self.python, "-m", *self.module, *args, *self.extra],
                                stdout=subprocess.PIPE, text=True, env=env, cwd=HERE.parent)

    def version(self) -> str:
        code = ("import importlib.metadata as m, sys; print(m.version(sys.argv[1]))")
        dist = "shunter" if self.name.startswith("shunter") else self.name
        return subprocess.run([self.python, "-c", code, dist], capture_output=True, text=True).stdout.strip()


def result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark process failed ({proc.returncode}): {out[-500:]}")
    return json.loads(out.strip().splitlines()[-1])


def wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if '"ready"' not in line:
        raise RuntimeError(f"worker did not start: {line!r}")


class Bench:
    def __init__(self, server: BenchServer, side: Side) -> None:
        self.server = server
        self.side = side
        self.url = server.url

    def _q(self) -> str:
        return "bench-" + uuid.uuid4().hex[:8]

    def _fill(self, queue: str, n: int, payload: int = 0, spaced: float = 0.0) -> subprocess.Popen[str]:
        args = ["fill", "--url", self.url, "--queue", queue, "-n", str(n)]
        if payload:
            args += ["--payload", str(payload)]
        if spaced:
            args += ["--spaced", str(spaced)]
        return self.side.start(*args)

    def enqueue(self, n: int, bulk: int) -> dict[str, Any]:
        self.server.flush()
        args = ["enqueue", "--url", self.url, "--queue", self._q(), "-n", str(n)]
        if bulk:
            args += ["--bulk", str(bulk)]
        return result(self.side.start(*args))

    def drain(self, n: int, mode: str = "noop", concurrency: int = 50, payload: int = 0,
              processes: int = 1) -> dict[str, Any]:
        self.server.flush()
        queue = self._q()
        result(self._fill(queue, n, payload))
        before = self.server.commands_processed()
        args = ["drain", "--url", self.url, "--queue", queue, "-n", str(n), "--mode", mode,
                "--concurrency", str(concurrency)]
        if processes > 1:
            args.append("--until-empty")
        procs = [self.side.start(*args) for _ in range(processes)]
        for p in procs:
            wait_ready(p)
        results = [result(p) for p in procs]
        merged = {
            "jobs": n, "elapsed": max(r["elapsed"] for r in results),
            "cpu_ms": sum(r["cpu_ms"] for r in results),
            "round_trips": sum(r["round_trips"] for r in results),
            "executions": sum(r["executions"] for r in results),
            "duplicated": sum(r["duplicated"] for r in results),
            "lease_lost": sum(r["lease_lost"] for r in results),
            "server_commands": self.server.commands_processed() - before,
        }
        merged["exactly_once"] = merged["executions"] == n and not merged["duplicated"]
        if not merged["exactly_once"]:
            # shunter's guarantee fails the run; a peer's duplicate is a finding to record
            if self.side.name.startswith("shunter"):
                raise AssertionError(f"{self.side.name}: not exactly once: {merged}")
            print(f"  ! {self.side.name}: {merged['executions']} executions of {n} jobs, "
                  f"{merged['duplicated']} jobs ran more than once", flush=True)
        return merged

    def latency(self, n: int = 500, gap: float = 0.005) -> dict[str, Any]:
        self.server.flush()
        queue = self._q()
        proc = self.side.start("drain", "--url", self.url, "--queue", queue, "-n", str(n),
                               "--mode", "latency")
        wait_ready(proc)
        time.sleep(0.5)  # let the worker go idle before producing
        result(self._fill(queue, n, spaced=gap))
        r = result(proc)
        q = statistics.quantiles(sorted(r.pop("latencies")), n=100)
        r.update(p50_ms=q[49] * 1000, p95_ms=q[94] * 1000, p99_ms=q[98] * 1000)
        return r


def median_of(runs: int, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    results = [fn(*args, **kwargs) for _ in range(runs)]
    for r in results:
        r["rate"] = r["jobs"] / r["elapsed"]
    best = sorted(results, key=lambda r: r["rate"])[len(results) // 2]
    best["rates"] = [round(r["rate"]) for r in results]
    return best


def workloads(bench: Bench, runs: int, scale: int) -> dict[str, Any]:
    peer = not bench.side.name.startswith("shunter")
    w: dict[str, Any] = {
        "enqueue_one": lambda: median_of(runs, bench.enqueue, 20_000 // scale, 0),
        "enqueue_bulk": None if peer else lambda: median_of(runs, bench.enqueue, 20_000 // scale, 1000),
        "drain_noop": lambda: median_of(runs, bench.drain, 20_000 // scale),
        "drain_sleep": lambda: median_of(runs, bench.drain, 2_000 // scale, "sleep"),
        "latency": lambda: bench.latency(500 if scale == 1 else 100),
        "scale_4proc": None if peer else lambda: median_of(runs, bench.drain, 40_000 // scale, processes=4),
        "drain_sync": None if bench.side.name == "arq" else (
            lambda: median_of(runs, bench.drain, 20_000 // scale, "sync")),
        "drain_10k_payload": lambda: median_of(runs, bench.drain, 20_000 // scale, payload=10_240),
    }
    return w


def summary(r: dict[str, Any] | None, ceil: dict[str, float]) -> str:
    if r is None:
        return "n/a"
    if "p50_ms" in r:
        return f"p50 {r['p50_ms']:.2f} ms, p95 {r['p95_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms"
    text = f"{r['rate']:,.0f} jobs/s (runs {r['rates']})"
    if ceil.get("evalsha"):
        text += f", {r['rate'] / ceil['evalsha']:.1%} of EVALSHA"
    text += f", {r['round_trips'] / r['jobs']:.3f} round trips/job, {r['cpu_ms'] / r['jobs']:.3f} CPU ms/job"
    if "server_commands" in r:
        text += f", {r['server_commands'] / r['jobs']:.1f} server cmds/job"
    return text


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="tenth-size workloads, one run")
    p.add_argument("--uvloop", action="store_true", help="run shunter's side on uvloop")
    p.add_argument("--peers", default="", help="comma-separated: arq,saq")
    p.add_argument("--peer-python", default=str(HERE / ".venv-peer" / "bin" / "python"))
    p.add_argument("--only", default="")
    p.add_argument("--out", default=str(HERE / "results.json"))
    a = p.parse_args()
    scale, runs = (10, 1) if a.quick else (1, a.runs)
    sides = [Side("shunter", sys.executable, ["bench.shunter_side"], ["--uvloop"] if a.uvloop else [])]
    if a.uvloop:
        sides[0].name = "shunter+uvloop"
    sides += [Side(name, a.peer_python, ["bench.peers", name], []) for name in a.peers.split(",") if name]
    server = BenchServer().start()
    try:
        results: dict[str, Any] = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform(), "redis": server.version(),
                        "load_before": os.getloadavg()[0]},
            "ceiling": ceiling(server),
            "versions": {s.name: s.version() for s in sides},
            "command": " ".join(["python -m bench.run", *sys.argv[1:]]),
        }
        print(f"redis ceiling: {results['ceiling']}", flush=True)
        for side in sides:
            bench = Bench(server, side)
            results[side.name] = {}
            for name, run in workloads(bench, runs, scale).items():
                if a.only and name not in a.only.split(","):
                    continue
                results[side.name][name] = run() if run else None
                print(f"{side.name:15} {name:18} {summary(results[side.name][name], results['ceiling'])}",
                      flush=True)
    finally:
        server.stop()
    Path(a.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
