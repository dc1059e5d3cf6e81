"""Benchmarks of job groups (issue 11, item 12): what fair queueing and per-group limits cost.

    python -m bench.groups drain [--jobs 50000] [--groups 1000] [--limits none,1,5]
                                 [--concurrency 50] [--rounds 5] [--uvloop] [--out FILE]
    python -m bench.groups drain-cost [--jobs 5000] [--groups 1000] [--limits none,1,5]
                                      [--batch 25] [--keep DIR] [--out FILE]
    python -m bench.groups claim-cost [--sizes 1000,10000,100000,1000000]
                                      [--blocked 10,100,1000,10000,100000] [--counts 1,25]
                                      [--calls 100] [--groups 1000] [--keep DIR] [--out FILE]
    python -m bench.groups prelude-cost [--scripts enqueue,complete,claim] [--calls 1000]
    python -m bench.groups latency [--backlog 100000] [--trials 20] [--concurrency 50]
                                   [--uvloop] [--out FILE]

Each part starts its own redis-server on a free port (no persistence, see bench.server)
and measures the shunter on PYTHONPATH; run it from a clone of each commit to compare.

``drain``: wall clock, jobs/s of one worker process (bench.shunter_side, no-op handlers,
``--concurrency`` slots) draining ``--jobs`` jobs already enqueued, each of the variants in
every round, their order rotating from round to round: ``ungrouped`` (no group), and the
same jobs dealt round-robin over ``--groups`` groups with no group limit (``none``) or
``configure_groups(concurrency=N)`` for each N of ``--limits``. Every drain checks that each
job ran exactly once. Prints each round and, per variant, the median rate and the median of
its per-round ratios to ``ungrouped`` (the ratio within one round is what load cannot move).

``drain-cost``: the same variants counted by callgrind instead of timed (load-independent):
server instructions per job inside EVALSHA while ``--jobs`` jobs are drained by
``complete_many`` calls that complete ``--batch`` jobs and claim as many (what a worker of
concurrency 50 sends, as bench.lua_cost's drain_25). The fill is not counted.

``claim-cost``: server instructions per ``storage.claim(count)`` call, counted by callgrind
(load-independent, as bench.lua_cost). The data sets are filled on a plain server, saved
(RDB) and loaded by a redis-server under callgrind with instrumentation off; each scenario
is then counted alone (instrumentation on, ``--calls`` claims of each of ``--counts`` after
one warm-up claim, dump). Scenarios, each in its own queue:
``ungrouped`` with N waiting jobs, ``grouped`` with N waiting jobs dealt over ``--groups``
groups, for each N of ``--sizes`` (plus the jobs the measured claims take, so N are left);
``full`` and ``rate``: G groups at their limit (group concurrency 1 with one job active, or
a rate of one start a day with one started), each with one more job waiting, plus one
eligible group (its own limit removed) with the jobs the claims take, for each G of
``--blocked``. Claimed jobs stay active (leases of 3 h). Instructions inside EVALSHA
(``evalGenericCommand``) per call and per job claimed.

``prelude-cost``: server instructions per EVALSHA of each of ``--scripts``' prelude alone
(the helpers it includes, then ``return 1``; ``--calls`` calls under callgrind), and of
``return 1``: what every call of the script pays before its own work.

``latency``: start latency of a job in a new group behind a busy group. A worker in this
process (``--concurrency`` slots, no-op handlers) drains group A (``--backlog`` jobs); once
it has started 2,000 of them, each trial adds one job to a fresh group B<i> and records the
time from just before the ``add`` to the start of its handler, the claims of other jobs
between its enqueue and its claim (dispatches, counted in the event stream) and the
handlers of A that started in between (jobs A already claimed by then). Trials are
20-40 ms apart; A's backlog at each trial is reported. ``idle`` is the same with an empty
queue, for reference.

claim-cost and drain-cost need valgrind. claim-cost with the default sizes fills 3.4
million keys (1.5 GB) and took about 10 minutes on a busy 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import shunter
from shunter import Job, Queue, Worker

from .groups_cost import claim_cost_part, drain_cost_part, fill, prelude_cost_part
from .run import Side, result, wait_ready
from .server import BenchServer

# -- drain ------------------------------------------------------------------------------

def drain_part(a: argparse.Namespace) -> dict[str, Any]:
    side = Side("shunter", sys.executable, ["bench.shunter_side"], ["--uvloop"] if a.uvloop else [])
    variants = ["ungrouped"] + [f"groups_{x}" for x in a.limits.split(",") if x]
    server = BenchServer().start()
    rounds: list[dict[str, dict[str, Any]]] = []
    try:
        for r in range(a.rounds):
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            this: dict[str, dict[str, Any]] = {}
            for v in order:
                server.flush()
                queue = "gb-" + uuid.uuid4().hex[:8]

                async def setup(v: str = v, queue: str = queue) -> None:
                    q = Queue(queue, server.url)
                    limit = v.split("_")[1] if v != "ungrouped" else ""
                    if limit and limit != "none":
                        await q.configure_groups(concurrency=int(limit))
                    await fill(q, a.jobs, 0 if v == "ungrouped" else a.groups)
                    await q.close()

                asyncio.run(setup())
                before = server.commands_processed()
                proc = side.start("drain", "--url", server.url, "--queue", queue, "-n", str(a.jobs),
                                  "--concurrency", str(a.concurrency))
                wait_ready(proc)
                res = result(proc)
                if res["executions"] != a.jobs or res["duplicated"] or res["missing"]:
                    raise AssertionError(f"{v}: not exactly once: {res}")
                this[v] = {"rate": a.jobs / res["elapsed"],
                           "cpu_us_per_job": 1000 * res["cpu_ms"] / a.jobs,
                           "server_cmds_per_job": (server.commands_processed() - before) / a.jobs,
                           "round_trips_per_job": res["round_trips"] / a.jobs}
            rounds.append(this)
            print(f"round {r + 1}: " + ", ".join(
                f"{v} {this[v]['rate']:,.0f}/s ({this[v]['rate'] / this['ungrouped']['rate']:.2f})"
                for v in variants), flush=True)
    finally:
        server.stop()
    summary = {}
    for v in variants:
        summary[v] = {
            "median_rate": statistics.median(x[v]["rate"] for x in rounds),
            "median_ratio": statistics.median(x[v]["rate"] / x["ungrouped"]["rate"] for x in rounds),
            "ratios": [round(x[v]["rate"] / x["ungrouped"]["rate"], 3) for x in rounds],
            "cpu_us_per_job": statistics.median(x[v]["cpu_us_per_job"] for x in rounds),
            "server_cmds_per_job": statistics.median(x[v]["server_cmds_per_job"] for x in rounds),
        }
        s = summary[v]
        print(f"{v:16} median {s['median_rate']:9,.0f} jobs/s  ratio to ungrouped "
              f"{s['median_ratio']:.3f} (rounds {s['ratios']})  worker CPU "
              f"{s['cpu_us_per_job']:.1f} us/job  server cmds {s['server_cmds_per_job']:.1f}/job",
              flush=True)
    return {"rounds": rounds, "summary": summary}


# -- latency ----------------------------------------------------------------------------

async def latency_async(a: argparse.Namespace, url: str) -> dict[str, Any]:
    name = "gb-lat-" + uuid.uuid4().hex[:6]
    q = Queue(name, url)
    state = {"a_started": 0}
    b_start: dict[str, tuple[float, int]] = {}

    async def handler(job: Job) -> None:
        if job.data.get("b"):
            b_start[job.data["b"]] = (time.perf_counter(), state["a_started"])
        else:
            state["a_started"] += 1

    async def claims_between(job_id: str) -> int:
        """Claims of other jobs in the event stream between this job's enqueue and its claim."""
        events: list[Any] = await q.storage.client.xrevrange(q.storage.keys.events, "+", "-",
                                                              count=9000) or []
        mine = [i for i, (_, f) in enumerate(events) if f[b"job"] == job_id.encode()]
        claimed = next(i for i in mine if events[i][1][b"event"] == b"claim")
        return len([1 for _, f in events[claimed + 1:max(mine)] if f[b"event"] == b"claim"])

    async def trials(prefix: str, n: int) -> list[dict[str, Any]]:
        out = []
        for t in range(n):
            key = f"{prefix}{t}"
            backlog = (await q.counts())["waiting"]
            a0 = state["a_started"]
            t0 = time.perf_counter()
            job = await q.add("noop", {"b": key}, group=f"B{key}")
            while key not in b_start:
                await asyncio.sleep(0.0002)
            t1, a1 = b_start[key]
            out.append({"ms": (t1 - t0) * 1000, "a_started": a1 - a0,
                        "dispatches": await claims_between(job.id), "a_waiting": backlog})
            await asyncio.sleep(random.uniform(0.02, 0.04))
        return out

    worker = Worker(name, {"noop": handler}, url, concurrency=a.concurrency, lease=60)
    runner = asyncio.create_task(worker.run(handle_signals=False))
    await asyncio.sleep(0.5)
    idle = await trials("idle", a.trials)
    await worker.close()
    await runner
    await fill(q, a.backlog, group="A")
    worker = Worker(name, {"noop": handler}, url, concurrency=a.concurrency, lease=60)
    runner = asyncio.create_task(worker.run(handle_signals=False))
    while state["a_started"] < 2000:
        await asyncio.sleep(0.001)
    busy = await trials("busy", a.trials)
    await worker.close()
    await runner
    await q.obliterate(force=True)
    await q.close()

    def stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
        ms = [r["ms"] for r in rows]
        d = [r["dispatches"] for r in rows]
        s = [r["a_started"] for r in rows]
        return {"p50_ms": statistics.median(ms), "max_ms": max(ms), "p50_dispatches": statistics.median(d),
                "max_dispatches": max(d), "p50_a_started": statistics.median(s), "max_a_started": max(s),
                "a_waiting": [min(r["a_waiting"] for r in rows),
                                                        max(r["a_waiting"] for r in rows)],
                "trials": rows}

    res = {"idle": stats(idle), "behind_group": stats(busy)}
    for k, v in res.items():
        print(f"{k:13} start latency p50 {v['p50_ms']:.2f} ms, max {v['max_ms']:.2f} ms; claims of "
              f"other jobs in between p50 {v['p50_dispatches']}, max {v['max_dispatches']}; handlers "
              f"of A started in between p50 {v['p50_a_started']}, max {v['max_a_started']}; "
              f"A waiting {v['a_waiting']}", flush=True)
    return res


def latency_part(a: argparse.Namespace) -> dict[str, Any]:
    if a.uvloop:
        import uvloop
        uvloop.install()
    server = BenchServer().start()
    try:
        return asyncio.run(latency_async(a, server.url))
    finally:
        server.stop()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.groups", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="part", required=True)
    d = sub.add_parser("drain")
    d.add_argument("--jobs", type=int, default=50_000)
    d.add_argument("--groups", type=int, default=1000)
    d.add_argument("--limits", default="none,1,5", help="per-group concurrency variants ('none': no limit)")
    d.add_argument("--concurrency", type=int, default=50)
    d.add_argument("--rounds", type=int, default=5)
    d.add_argument("--uvloop", action="store_true")
    dc = sub.add_parser("drain-cost")
    dc.add_argument("--jobs", type=int, default=5000)
    dc.add_argument("--groups", type=int, default=1000)
    dc.add_argument("--limits", default="none,1,5")
    dc.add_argument("--batch", type=int, default=25, help="jobs completed and claimed per call")
    dc.add_argument("--keep", default="", help="keep each variant's callgrind dump in this folder")
    c = sub.add_parser("claim-cost")
    c.add_argument("--sizes", default="1000,10000,100000,1000000")
    c.add_argument("--blocked", default="10,100,1000,10000,100000")
    c.add_argument("--counts", default="1,25", help="jobs asked per claim call")
    c.add_argument("--calls", type=int, default=100)
    c.add_argument("--groups", type=int, default=1000)
    c.add_argument("--keep", default="", help="keep each scenario's callgrind dump in this folder")
    pc = sub.add_parser("prelude-cost")
    pc.add_argument("--scripts", default="enqueue,complete,claim")
    pc.add_argument("--calls", type=int, default=1000)
    lat = sub.add_parser("latency")
    lat.add_argument("--backlog", type=int, default=100_000)
    lat.add_argument("--trials", type=int, default=20)
    lat.add_argument("--concurrency", type=int, default=50)
    lat.add_argument("--uvloop", action="store_true")
    for s in (d, dc, c, pc, lat):
        s.add_argument("--out", default="", help="write the figures to this JSON file")
    a = p.parse_args()
    fn = {"drain": drain_part, "drain-cost": drain_cost_part, "claim-cost": claim_cost_part,
          "prelude-cost": prelude_cost_part, "latency": latency_part}[a.part]
    out = fn(a)
    out.update(command=" ".join(["python -m bench.groups", *sys.argv[1:]]),
               load=os.getloadavg(), source=str(Path(str(shunter.__file__)).parent))
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
