"""``python -m faults [--full|--short] [--scenario NAME ...]``: run the fault suite, print
one table per scenario, write a Markdown report, exit non-zero on any violation.

Control variants (``*-control``) must be caught: the suite fails if one of them passes.
``make chaos`` runs ``--full --update-docs``, which also rewrites the "Fault suite
results" section of docs/reliability.md (and nothing else in that file).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from .checker import Report, print_reports
from .harness import FULL, SHORT, Profile
from .scenarios import SCENARIOS, Scenario

SECTION = "## Fault suite results"
REPO = Path(__file__).resolve().parent.parent


async def run_one(scenario: Scenario, root: Path, profile: Profile) -> list[Report]:
    start = time.monotonic()
    try:
        reports = await scenario.run(root, profile)
    except Exception as exc:
        reports = [Report(scenario.name, error=f"{type(exc).__name__}: {exc}")]
    took = time.monotonic() - start
    for rep in reports:
        rep.seconds = took  # of the whole scenario
    return reports


def verdict(scenario: Scenario, reports: list[Report]) -> bool:
    """A scenario passes when it has no violation; a control passes when it has one
    (and did not crash: a crash proves nothing)."""
    if scenario.expect_fail:
        return any(r.violations for r in reports) and not any(r.error for r in reports)
    return all(r.passed for r in reports)


def markdown(results: list[tuple[Scenario, list[Report], bool]], profile: Profile, argv: list[str],
             total: float) -> str:
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    lines = [
        "# shunter fault suite report", "",
        f"- command: `python -m faults {' '.join(argv)}`".rstrip(),
        f"- profile: {profile.name} (lease {profile.lease:g} s)",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; total {total / 60:.1f} min",
        f"- machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{redis_version.split(' sha')[0].strip()}",
        f"- verdict: {'PASS' if all(ok for *_, ok in results) else 'FAIL'}", "",
        "| scenario | verdict | scenario time |", "| --- | --- | --- |",
    ]
    for scenario, reports, ok in results:
        for rep in reports:
            state = "PASS" if rep.passed else "FAIL"
            if scenario.expect_fail:
                state += " (control: caught as expected)" if ok else " (control NOT caught)"
            lines.append(f"| {rep.name} | {state} | {rep.seconds:.1f} s |")
    for _, reports, _ in results:
        for rep in reports:
            lines += ["", f"### {rep.name}", "", "| check | value | ok | note |", "| --- | --- | --- | --- |"]
            for c in rep.checks:
                ok = {True: "ok", False: "**FAIL**", None: ""}[c.ok]
                note = str(c.note).replace("|", "\\|")
                lines.append(f"| {c.metric} | {str(c.value).replace('|', '/')} | {ok} | {note} |")
            if rep.error:
                lines.append(f"| scenario error | | **FAIL** | {rep.error} |")
    return "\n".join(lines) + "\n"


def update_docs(path: Path, summary: str) -> None:
    """Replace (or append) only our section of docs/reliability.md."""
    text = path.read_text() if path.exists() else ""
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: summary, text)
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + summary
    path.write_text(text)


ABOUT = """\
The fault suite (`faults/` at the repository root, not shipped in the wheel) proves the
guarantees above with real `redis-server` processes on their own ports and real worker
processes (`python -m faults.worker_main`) that it SIGKILLs, SIGTERMs, SIGSTOPs and
SIGCONTs by pid, and with a TCP proxy in front of each process (`faults/proxy.py`, its
own thread and event loop) that resets, stalls or refuses its connections, or lets one
request run on the server and swallows its reply. The producer and every handler write
to an independent ledger (SQLite in WAL mode, never the Redis under test): each enqueue
as ok / error / unknown, each execution start and end with job id, attempt token, attempt
number and pid, whether each fenced commit was accepted, each worker process (pid, name,
lease), and every fault the harness injected with its start and end: kills, stops and
continues, Redis crashes and restarts, and each proxy's faults with the pid behind it.

After a drain the checker reads the queue's event stream and the ledger and computes:

- `lost`, `unexpected`, `double_commit` (more than one accepted terminal transition);
- `rescues explained by a fault`: every lease that ran out must be caused by a fault
  injected on that attempt: its worker killed, stopped or cut off from Redis by its
  proxy, or Redis down; the fault overlapping the attempt and the rescue falling between
  the fault's start + lease / 2 and its end + lease + rescue interval (lease / 2) + 1 s of
  slack. A rescue alone explains nothing: a worker bug loses leases too;
- `duplicated`: a job started again under a newer token without a `retry` in between
  must follow an explained rescue or a `release` (shutdown hand-back) of the older one;
- `concurrent executions in one worker`: two attempts of one job overlapping in one
  process while the older one was not interrupted;
- `rescued attempts stopped in time`: a rescued attempt's handler ends by the time its
  worker could know (the rescue or the end of its fault) + lease / 3 + 0.5 s;
- `succeeded jobs that ended failed`: a job whose handler returned ends `completed`;
- completions without a returned handler, stale commits accepted, and acknowledged =
  completed + failed + cancelled with nothing left active, waiting or scheduled.

Scenarios: `kill-storm` (SIGKILL a worker every few seconds under load), `rolling-sigterm`
(restarts lose and duplicate nothing; hand-backs keep the attempt), `blocked-loop`
(handlers blocking the loop for 3x the lease keep it), `sigstop` (a frozen worker's jobs
re-run elsewhere, its stale commits refused), `sigstop-reclaim` (issue 8: the frozen
worker claims the same job again on waking; the stale attempt is interrupted at once and
the job completes once, never failed), `redis-restart` (AOF `always` and `everysec` under
load), `redis-restart-long` (Redis down for less, then more, than the lease while every
slot runs a handler longer than the outage), `oom`, `poison-pills`, `retry-storm`,
`network` (resets, a stall and a partition longer than the lease, for workers and the
producer, each behind its own proxy), `network-replies` (the reply of a `claim` or of a
`complete` lost after the script ran: no lease may run out, no job run twice), `model`
(a Hypothesis state machine on the storage layer) and `group-kill` (issue 11: SIGKILL of
workers holding group slots under a per-group concurrency limit; the slots come back
within lease + rescue interval + 1 s, sampled active sets and the handlers' overlaps never
exceed the limit, and no slot or line is left when the queue drains). Control variants must be caught, or
the suite fails: `blocked-loop-control` (renewal forced onto the event loop),
`sigstop-control` (attempts keyed by job id, the bug of issue 8) and
`retry-storm-control` (retries without jitter).

- `make chaos`: full sizes, writes [reliability-report.md](reliability-report.md) and
  this section; `python -m faults --short` or `make test` (tests/test_faults.py): the
  short version of every scenario, about two minutes in all.
- `python -m faults --scenario kill-storm --workdir /tmp/f` keeps ledgers and worker logs.

Engine bugs the suite found (each fixed, with a regression test in tests/test_faults.py):

- **Orphans waited behind the backlog** (kill -9 storm): `rescue` put a job back at the
  tail of `waiting`, so with 20,000 jobs queued an orphan re-ran 9.6 s after its worker
  died, for a 1.5 s lease. `claim` now stores the job's place in line and `rescue` puts
  it back there (worst re-run after the fix: 2.3 s).
- **Workers stalled when Redis memory was full** (out-of-memory scenario): under
  `maxmemory` + `noeviction` Redis refuses a script whose first write may grow memory;
  `retry`, `fail`, `abort`, `release` and `renew` began with HSET / ZADD, so retries were
  refused and leases lapsed, and jobs ran twice once memory was freed. They now write
  first with ZREM from the active index (renew: ZREM + ZADD), so workers still renew and
  settle while producers are refused.
- **A frozen worker ran a job twice at once** (issue 8, `sigstop-reclaim`): a worker
  SIGSTOPped past its lease found its job rescued on waking and, with a free slot,
  claimed it again while the first attempt went on (never interrupted); the first
  attempt's end then dropped the second one's lease, and the job ended failed (stalls 2)
  although both runs succeeded. The worker's running attempts and held leases were keyed
  by job id; they are keyed by (job id, token) now, and the stale attempt is interrupted.
  The checker missed it: it took any rescue as the explanation of a re-run, so it now
  ties every rescue to an injected fault and checks the outcome of succeeded jobs.
- **A lost claim reply stalled its jobs** (`network-replies`): when the reply of a
  `claim` (or of a `complete` that claims the next jobs) was lost after the script ran,
  the claimed jobs stayed active with nobody running them until their lease ran out (28
  of 28 in the short run). A re-sent claim with the same request id now returns the
  same batch.

Known limit: `rescue` takes its rate-limit lock with SET NX, which Redis refuses while
memory is full, so jobs of a worker that dies during that time are rescued once memory
is freed. The `everysec` loss window is measured with SIGKILL of the server, which keeps
the OS page cache: a machine crash can lose up to about a second of acknowledged writes.

"""


def docs_section(results: list[tuple[Scenario, list[Report], bool]], profile: Profile,
                 argv: list[str], total: float, report_path: Path) -> str:
    lines = [SECTION, "", ABOUT,
             f"Latest full run: `make chaos` (= `python -m faults {' '.join(argv)}`), "
             f"{datetime.now(UTC).strftime('%Y-%m-%d')}, {total / 60:.1f} min on a "
             f"{os.cpu_count()}-CPU machine, lease {profile.lease:g} s. Full tables: "
             f"[{report_path.name}]({report_path.name}).", "",
             "| scenario | verdict | key figures |", "| --- | --- | --- |"]
    keys = ("enqueues acknowledged", "lost", "double_commit", "duplicated", "orphans", "throughput",
            "window", "refused", "caught", "invariants", "steps", "wave", "completed", "re-run",
            "rescues explained", "succeeded jobs", "interrupted", "replies lost", "ran out")
    for scenario, reports, ok in results:
        for rep in reports:
            state = "PASS" if rep.passed else "FAIL"
            if scenario.expect_fail:
                state = "caught (control)" if ok else "NOT caught (control)"
            figures = "; ".join(f"{c.metric}: {c.value}" for c in rep.checks
                                if any(k in c.metric for k in keys))
            lines.append(f"| {rep.name} | {state} | {figures.replace('|', '/')} |")
    return "\n".join(lines) + "\n\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m faults", description=__doc__.split("\n\n")[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="realistic sizes (minutes)")
    size.add_argument("--short", action="store_true", help="CI sizes (seconds each; the default)")
    p.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="run only these")
    p.add_argument("--workdir", type=Path, help="keep ledgers and worker logs here")
    p.add_argument("--report", type=Path, help="Markdown report (default: <workdir>/report.md)")
    p.add_argument("--update-docs", action="store_true",
                   help="rewrite the 'Fault suite results' section of docs/reliability.md")
    args = p.parse_args(argv)
    profile = FULL if args.full else SHORT
    root = args.workdir or Path(tempfile.mkdtemp(prefix="faults-"))
    root.mkdir(parents=True, exist_ok=True)
    chosen = [SCENARIOS[n] for n in args.scenario] if args.scenario else list(SCENARIOS.values())
    started = time.monotonic()
    results = []
    for scenario in chosen:
        print(f"running {scenario.name} ({profile.name}) ...", flush=True)
        reports = asyncio.run(run_one(scenario, root, profile))
        ok = verdict(scenario, reports)
        results.append((scenario, reports, ok))
        print_reports(reports)
        if scenario.expect_fail:
            print(f"control {scenario.name}: {'caught as expected' if ok else 'NOT CAUGHT'}")
    total = time.monotonic() - started
    report = args.report or root / "report.md"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(markdown(results, profile, argv, total))
    if args.update_docs:
        update_docs(REPO / "docs" / "reliability.md", docs_section(results, profile, argv, total, report))
    failed = [s.name for s, _, ok in results if not ok]
    print(f"\n{len(results) - len(failed)}/{len(results)} scenarios as expected in {total:.0f}s; "
          f"report: {report}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    if not args.workdir and not failed:  # keep the report, drop ledgers and logs
        for child in root.iterdir():
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
