"""The callgrind parts of ``python -m bench.groups`` (its docstring says what each does):
``drain-cost``, ``claim-cost`` and ``prelude-cost`` count the server instructions groups
cost, load-independent; and the fill helpers every part of bench.groups shares."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from typing import Any

import redis
import redis.asyncio

from shunter import Queue

from .lua_cost import Server, wait_up
from .server import BenchServer, free_port

LONG_LEASE_MS = 3 * 3600 * 1000


def ints(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x]


async def fill(q: Queue, n: int, groups: int = 0, group: str | None = None, start: int = 0,
               chunk: int = 1000) -> None:
    """n jobs ``{"i": i}``: without a group, in ``group``, or dealt round-robin over
    ``groups`` groups g0..g<groups-1>."""
    for lo in range(start, start + n, chunk):
        entries: list[dict[str, Any]] = []
        for i in range(lo, min(lo + chunk, start + n)):
            e: dict[str, Any] = {"task": "noop", "data": {"i": i}}
            if groups:
                e["group"] = f"g{i % groups}"
            elif group:
                e["group"] = group
            entries.append(e)
        await q.add_bulk(entries)


async def drain_cost_async(a: argparse.Namespace, server: Server, url: str) -> dict[str, Any]:
    client = redis.asyncio.Redis.from_url(url)
    await wait_up(client)
    variants = ["ungrouped"] + [f"groups_{x}" for x in a.limits.split(",") if x]
    out: dict[str, Any] = {}
    for v in ["warm", *variants]:
        await client.flushall()
        q = Queue("gbcost", url)
        limit = v.split("_")[1] if v.startswith("groups_") else ""
        if limit and limit != "none":
            await q.configure_groups(concurrency=int(limit))
        jobs = 200 if v == "warm" else a.jobs
        await fill(q, jobs, 0 if v == "ungrouped" else a.groups)
        server.dump()  # the fill is not counted
        held = (await q.storage.claim(a.batch, LONG_LEASE_MS, "w")).jobs
        done = 0
        while held:
            acks = [(j[b"id"].decode(), int(j[b"token"]), b"null") for j in held]
            done += len(acks)
            _, claimed = await q.storage.complete_many(acks, claim=a.batch, lease_ms=LONG_LEASE_MS,
                                                       worker_id="w")
            held = claimed.jobs
        assert done == jobs, (v, done, jobs)
        total, evalc = server.dump(f"{a.keep}/drain-{v}.callgrind" if a.keep and v != "warm" else "")
        await q.close()
        if v != "warm":
            out[v] = {"eval_ir_per_job": round(evalc / jobs), "server_ir_per_job": round(total / jobs)}
    await client.aclose()
    for v in variants:
        out[v]["ratio"] = round(out[v]["eval_ir_per_job"] / out["ungrouped"]["eval_ir_per_job"], 3)
        print(f"{v:16} {out[v]['eval_ir_per_job']:>9,} instructions in EVALSHA per job "
              f"({out[v]['ratio']:.3f} of ungrouped), {out[v]['server_ir_per_job']:,} in all", flush=True)
    return out


def drain_cost_part(a: argparse.Namespace) -> dict[str, Any]:
    if not shutil.which("valgrind"):
        raise SystemExit("needs valgrind (callgrind)")
    port = free_port()
    server = Server("redis-server", port, tempfile.mkdtemp(prefix="gb-dcost-"))
    try:
        return asyncio.run(drain_cost_async(a, server, f"redis://127.0.0.1:{port}/0"))
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


# -- claim cost -------------------------------------------------------------------------

class CallgrindServer(Server):
    """redis-server under callgrind (bench.lua_cost's), loading an RDB, with instrumentation
    off until asked (``control("--instr=on")``)."""

    def __init__(self, rdb: str, port: int) -> None:
        self.port, self.parts = port, 0
        self.workdir = tempfile.mkdtemp(prefix="gb-cost-")
        shutil.copy(rdb, f"{self.workdir}/dump.rdb")
        self.proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no",
             f"--callgrind-out-file={self.workdir}/cg.out", "redis-server", "--port", str(port),
             "--save", "", "--appendonly", "no", "--bind", "127.0.0.1", "--dir", self.workdir,
             "--dbfilename", "dump.rdb"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


async def claim_all(q: Queue, batch: int = 1000) -> int:
    taken = 0
    while True:
        got = len((await q.storage.claim(batch, LONG_LEASE_MS, "setup")).jobs)
        if not got:
            return taken
        taken += got


async def fill_blocked(url: str, name: str, kind: str, groups: int, extra: int) -> None:
    from shunter import Rate  # not in the trees before groups (prelude-cost runs on them)

    q = Queue(name, url)
    if kind == "full":
        await q.configure_groups(concurrency=1)
    else:
        await q.configure_groups(rate=Rate(1, per=86_400))
    await fill(q, 2 * groups, groups)  # two jobs per group
    taken = await claim_all(q)  # one each: every group is now at its limit
    assert taken == groups, (kind, groups, taken)
    if kind == "full":
        await q.configure_group("eligible", concurrency=0)
    else:
        await q.configure_group("eligible", rate=0)
    await fill(q, extra, group="eligible", start=2 * groups)
    counts = await q.counts()
    assert counts["waiting"] == groups + extra and counts["active"] == groups, counts
    await q.close()


def scenarios(a: argparse.Namespace) -> list[tuple[str, str, int]]:
    out = []
    for n in ints(a.sizes):
        out += [("ungrouped", f"u{n}", n), ("grouped", f"g{n}", n)]
    for g in ints(a.blocked):
        out += [("full", f"full{g}", g), ("rate", f"rate{g}", g)]
    return out


async def fill_all(url: str, a: argparse.Namespace, extra: int) -> None:
    jobs = []
    for kind, name, n in scenarios(a):
        if kind == "ungrouped":
            jobs.append(fill(Queue(name, url), n + extra))
        elif kind == "grouped":
            jobs.append(fill(Queue(name, url), n + extra, a.groups))
        else:
            jobs.append(fill_blocked(url, name, kind, n, extra))
    sem = asyncio.Semaphore(3)

    async def one(c: Any) -> None:
        async with sem:
            await c

    await asyncio.gather(*(one(c) for c in jobs))


async def measure_claims(url: str, server: CallgrindServer, a: argparse.Namespace
                         ) -> list[dict[str, Any]]:
    client = redis.asyncio.Redis.from_url(url)
    await wait_up(client, 3000)  # the RDB loads under valgrind first
    await client.aclose()
    rows = []
    for kind, name, n in scenarios(a):
        q = Queue(name, url)
        for count in ints(a.counts):
            await q.storage.claim(count, LONG_LEASE_MS, "warm")  # scripts loaded, not counted
            before = await q.counts()
            server.control("--instr=on")
            server.control("--zero")
            claimed = 0
            for _ in range(a.calls):
                claimed += len((await q.storage.claim(count, LONG_LEASE_MS, "w")).jobs)
            keep = f"{a.keep}/{name}-c{count}.callgrind" if a.keep else ""
            total, evalc = server.dump(keep)
            server.control("--instr=off")
            assert claimed == a.calls * count, (name, count, claimed)
            row = {"scenario": kind, "size": n, "count": count, "calls": a.calls,
                   "waiting_before": before["waiting"],
                   "eval_ir_per_call": round(evalc / a.calls),
                   "eval_ir_per_job": round(evalc / claimed),
                   "server_ir_per_call": round(total / a.calls)}
            rows.append(row)
            print(json.dumps(row), flush=True)
        await q.close()
    return rows


def claim_cost_part(a: argparse.Namespace) -> dict[str, Any]:
    if not shutil.which("valgrind"):
        raise SystemExit("needs valgrind (callgrind)")
    extra = (a.calls + 1) * sum(ints(a.counts))  # what the claims take, warm-up included
    plain = BenchServer().start()
    rdbdir = tempfile.mkdtemp(prefix="gb-rdb-")
    try:
        t0 = time.perf_counter()
        asyncio.run(fill_all(plain.url, a, extra))
        r = redis.Redis(port=plain.port, socket_timeout=600, socket_connect_timeout=60)
        r.bgsave()  # a SAVE of a GB blocks past the client's handshake timeout
        while r.info("persistence")["rdb_bgsave_in_progress"]:
            time.sleep(1)
        assert r.info("persistence")["rdb_last_bgsave_status"] == "ok"
        info = r.info("memory")["used_memory_human"]
        print(f"filled in {time.perf_counter() - t0:.0f} s, {r.dbsize()} keys, {info}", flush=True)
        shutil.copy(plain.workdir / "dump.rdb", f"{rdbdir}/dump.rdb")
    finally:
        plain.stop()
    port = free_port()
    t0 = time.perf_counter()
    server = CallgrindServer(f"{rdbdir}/dump.rdb", port)
    try:
        rows = asyncio.run(measure_claims(f"redis://127.0.0.1:{port}/0", server, a))
    finally:
        server.stop()
        shutil.rmtree(rdbdir, ignore_errors=True)
    print(f"counted in {time.perf_counter() - t0:.0f} s", flush=True)
    for count in ints(a.counts):
        for kind in ("ungrouped", "grouped", "full", "rate"):
            mine = [x for x in rows if x["scenario"] == kind and x["count"] == count]
            if not mine:
                continue
            base = mine[0]["eval_ir_per_call"]
            print(f"count {count:3} {kind:10} " + "  ".join(
                f"{x['size']:>8,}: {x['eval_ir_per_call']:>9,} ({x['eval_ir_per_call'] / base:.3f})"
                for x in mine), flush=True)
    return {"rows": rows}


def prelude_cost_part(a: argparse.Namespace) -> dict[str, Any]:
    """Instructions per EVALSHA of each script's prelude alone: its helpers, then return 1."""
    from shunter.storage import scripts

    helpers = scripts.library()
    sources = {"return 1": "return 1"}
    for name in a.scripts.split(","):
        own = (scripts._LUA / f"{name}.lua").read_text()
        head = "-- include: " + ", ".join(scripts.includes_of(own)) + "\n"
        sources[name] = scripts.build_source(head + "return 1", helpers)[0]
    port = free_port()
    server = Server("redis-server", port, tempfile.mkdtemp(prefix="gb-prelude-"))
    out: dict[str, Any] = {}
    try:
        client = redis.asyncio.Redis(port=port)
        asyncio.run(wait_up(client))
        r = redis.Redis(port=port)
        for name, src in sources.items():
            sha = r.script_load(src)
            for _ in range(20):
                r.evalsha(sha, 0)
            server.dump()
            for _ in range(a.calls):
                r.evalsha(sha, 0)
            out[name] = {"eval_ir_per_call": server.dump()[1] // a.calls,
                         "functions": src.count("\nlocal function ")}
            print(f"{name:10} {out[name]['eval_ir_per_call']:>8,} instructions per call "
                  f"({out[name]['functions']} helper functions)", flush=True)
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)
    return out
