"""The checker: compares what the ledger saw with what the queue's event stream recorded.

In the style of Jepsen's ``total-queue`` checker, computed after a drain period:

- ``lost``: acknowledged enqueues that never reached a terminal state;
- ``unexpected``: executions (or stream entries) of ids the producer never enqueued, and
  executions of an attempt token the stream never handed out;
- ``double_commit``: more than one accepted terminal transition for one job (stream events
  ``complete``, ``fail``, ``abort``, ``rescue`` to failed/cancelled, ``cancel`` to cancelled);
- ``rescues explained by a fault``: every ``rescue`` (a lease that ran out) must be caused
  by a fault the harness injected on that attempt: its worker killed (SIGKILL, or a
  poison pill killing itself), stopped (SIGSTOP..SIGCONT) or cut off from Redis by the
  proxy in front of it, or Redis itself down, the fault overlapping the attempt and the
  rescue falling between the fault's start + lease / 2 and its end + lease + rescue
  interval + slack (see :func:`explain_rescues`). A rescue is not an explanation by itself: a worker bug
  (a lease dropped while the handler still runs) causes rescues too;
- ``duplicated``: jobs whose handler started again without a retry in between; each must be
  explained by an explained ``rescue`` or by a ``release`` (shutdown hand-back) of the
  earlier attempt, read from the stream;
- ``concurrent executions in one worker``: two attempts of one job overlapping in time in
  the same worker process while the older one was not interrupted (its handler was not
  cancelled: it ran on as if it still owned the job);
- ``rescued attempts stopped in time``: the handler of a rescued attempt must end (be
  interrupted) by the time its worker could know it lost the lease, plus a renewal
  interval and a margin: the rescue, or the end of the fault that cut the worker off, +
  lease / 3 + :data:`STOP_MARGIN` (unless its process was killed);
- ``succeeded jobs that ended failed``: a job whose handler returned (the ledger's end
  ``return`` for some attempt) must end ``completed``, never ``failed`` (the handlers of
  the suite are deterministic: an attempt that succeeded once would succeed again);
- ``unbacked``: completions whose attempt never returned in the ledger;
- counts reconcile: acknowledged = completed + failed + cancelled, nothing left active,
  waiting or scheduled.

The stream's order is the transition order (each script appends its event), so the token
of a terminal event is the token of that job's latest ``claim`` before it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import redis

from shunter.storage.keys import QueueKeys

from .explain import (
    STOP_MARGIN,
    Fault,
    Rescues,
    concurrent_runs,
    explain_rescues,
    injected_faults,
    ran_on,
    worker_pid,
)
from .ledger import Commit, Execution, Ledger

__all__ = ["Analysis", "Check", "Fault", "JobTrace", "Report", "Rescues", "analyse", "concurrent_runs",
           "explain_rescues", "injected_faults", "print_reports", "ran_on", "worker_pid"]

TERMINAL_EVENTS = {"complete", "fail", "abort"}



@dataclass(slots=True)
class Check:
    metric: str
    value: Any
    ok: bool | None  #: None = informational
    note: str = ""


@dataclass
class Report:
    name: str
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""  #: the scenario crashed (a violation too)

    def add(self, metric: str, value: Any, ok: bool | None = None, note: str = "") -> Check:
        check = Check(metric, value, ok, note)
        self.checks.append(check)
        return check

    def expect(self, metric: str, value: Any, ok: bool, note: str = "") -> Check:
        return self.add(metric, value, bool(ok), note)

    @property
    def violations(self) -> list[Check]:
        bad = [c for c in self.checks if c.ok is False]
        if self.error:
            bad.append(Check("scenario error", self.error, False))
        return bad

    @property
    def passed(self) -> bool:
        return not self.violations


@dataclass
class JobTrace:
    """One job's history from the stream: (ms, event, state, token-at-the-time), and the
    worker id each token was claimed by (when the claim event names it)."""

    events: list[tuple[int, str, str, int]] = field(default_factory=list)
    workers: dict[int, str] = field(default_factory=dict)

    def claims(self) -> list[tuple[int, int]]:
        return [(ms, tok) for ms, ev, _, tok in self.events if ev == "claim"]

    def terminals(self) -> list[tuple[int, str, str, int]]:
        return [e for e in self.events if is_terminal(e[1], e[2])]

    def ended_by(self, token: int) -> str | None:
        """What ended attempt ``token``: the first event after its claim that leaves active."""
        seen = False
        for _, ev, state, tok in self.events:
            if ev == "claim":
                if seen:
                    return None
                seen = tok == token
            elif seen and (ev in ("retry", "rescue", "release") or is_terminal(ev, state)):
                return ev
        return None


def is_terminal(event: str, state: str) -> bool:
    return (event in TERMINAL_EVENTS or (event == "rescue" and state in ("failed", "cancelled"))
            or (event == "cancel" and state == "cancelled"))


def read_stream(client: redis.Redis, queue: str) -> tuple[dict[str, JobTrace], int]:
    """Every event of the queue, grouped by job, with the current token attached."""
    key = QueueKeys(queue).events
    traces: dict[str, JobTrace] = defaultdict(JobTrace)
    token: dict[str, int] = {}
    cursor, total = "-", 0
    while True:
        batch = client.xrange(key, min=cursor, max="+", count=10_000)
        if cursor != "-":
            batch = batch[1:]
        if not batch:
            break
        for eid, raw in batch:
            total += 1
            f = {k.decode(): v.decode("utf-8", "replace") for k, v in raw.items()}
            job, ev = f.get("job", ""), f.get("event", "")
            if not job:
                continue
            if ev == "claim":
                token[job] = int(f.get("token", 0))
                if f.get("worker"):
                    traces[job].workers[token[job]] = f["worker"]
            ms = int(eid.decode().split("-")[0])
            traces[job].events.append((ms, ev, f.get("state", ""), token.get(job, 0)))
        cursor = batch[-1][0].decode()
    return dict(traces), total


@dataclass
class Analysis:
    """Everything the checks were computed from, for scenario-specific checks."""

    traces: dict[str, JobTrace]
    enqueues: dict[str, tuple[str, str]]
    starts: dict[str, list[tuple[int, int, int, float]]]  #: job -> [(token, attempt, pid, ts)]
    returned: dict[str, set[int]]  #: job -> tokens whose handler returned
    final: dict[str, str]  #: job -> terminal state (last terminal event)
    dup_causes: Counter[str]
    duplicated_jobs: set[str]
    counts: dict[str, int]
    stream_len: int
    executions: list[Execution] = field(default_factory=list)
    rescues: Rescues = field(default_factory=Rescues)
    faults: list[Fault] = field(default_factory=list)


def analyse(report: Report, url: str, queue: str, ledger: Ledger, *,
            loss_window: bool = False, allow_duplicates: bool = True) -> Analysis:
    """Run the generic checks into ``report``. ``loss_window``: the server may have lost
    acknowledged writes (AOF everysec crash), so losses are reported, not violations.
    ``allow_duplicates=False``: any re-execution other than a retry is a violation."""
    # The ledger first, then the server: every ledger row follows the transition it saw,
    # so even a run that did not quiesce is read consistently.
    enqueues = ledger.enqueues(queue)
    executions = ledger.executions(queue)
    commits = ledger.commits(queue)
    faults = injected_faults(ledger)
    workers = ledger.workers()
    client = redis.Redis.from_url(url, decode_responses=False)
    try:
        traces, stream_len = read_stream(client, queue)
        k = QueueKeys(queue)
        counts = {name: int(client.zcard(getattr(k, name))) for name in
                  ("waiting", "scheduled", "active", "completed", "failed", "cancelled")}
    finally:
        client.close()
    acked = {j for j, (status, _) in enqueues.items() if status == "ok"}
    starts: dict[str, list[tuple[int, int, int, float]]] = defaultdict(list)
    returned: dict[str, set[int]] = defaultdict(set)
    for ex in executions:
        if ex.phase == "start":
            starts[ex.job].append((ex.token, ex.attempt, ex.pid, ex.ts))
        elif ex.outcome == "return":
            returned[ex.job].add(ex.token)

    final = {}
    double = []
    for job, trace in traces.items():
        terms = trace.terminals()
        if terms:
            final[job] = terms[-1][2]
        if len(terms) > 1:
            double.append(job)
    lost = sorted(acked - final.keys())
    unexpected = sorted((starts.keys() | traces.keys()) - enqueues.keys())
    rescues = explain_rescues(traces, starts, faults, workers, queue)
    # executions of a token the stream never handed out (or the same token run twice)
    foreign, same_token = [], []
    dup_causes: Counter[str] = Counter()
    duplicated: set[str] = set()
    unexplained = []
    for job, runs in starts.items():
        seen = traces.get(job)
        claimed = {tok for _, tok in seen.claims()} if seen else set()
        tokens = [tok for tok, *_ in runs]
        foreign += [(job, t) for t in tokens if t not in claimed]
        if len(tokens) != len(set(tokens)):
            same_token.append(job)
        ordered = sorted(set(tokens))
        for earlier in ordered[:-1]:
            cause = seen.ended_by(earlier) if seen else None
            if cause == "retry":
                continue
            if cause == "rescue" and (job, earlier) not in rescues.explained:
                cause = "rescue without a fault"
            duplicated.add(job)
            dup_causes[cause or "unexplained"] += 1
            if cause not in ("rescue", "release"):
                unexplained.append((job, earlier, cause))
    unbacked = [job for job, trace in traces.items() for _, ev, _, tok in trace.terminals()
                if ev == "complete" and tok not in returned.get(job, set())]
    stale_accepted = _stale_commits(commits, traces)
    overlapping = concurrent_runs(executions)
    ran_late, stale_checked = ran_on(executions, rescues, faults, workers)
    succeeded_failed = sorted(job for job in returned if final.get(job) == "failed")

    terminal_acked = Counter(final[j] for j in acked if j in final)
    left = counts["waiting"] + counts["scheduled"] + counts["active"]
    r = report
    r.add("enqueues acknowledged", len(acked), None,
          f"{len(enqueues)} attempted; {len(enqueues) - len(acked)} refused or unknown")
    r.add("stream events read", stream_len)
    r.add("executions started", sum(len(v) for v in starts.values()))
    if loss_window:
        r.add("lost (loss window)", len(lost), None, _sample(lost) or "acknowledged, then lost by the crash")
    else:
        r.expect("lost", len(lost), not lost, _sample(lost))
    r.expect("unexpected", len(unexpected), not unexpected, _sample(unexpected))
    r.expect("double_commit", len(double), not double, _sample(double))
    if loss_window:
        r.add("executions of unknown tokens", len(foreign), None, _sample(foreign))
    else:
        r.expect("executions of unknown tokens", len(foreign), not foreign, _sample(foreign))
        r.expect("same attempt started twice", len(same_token), not same_token, _sample(same_token))
    kinds = ", ".join(f"{k}: {n}" for k, n in sorted(rescues.by_kind.items())) or "none explained"
    latest = f"; latest {rescues.latest:+.2f}s vs end + lease + interval" if rescues.explained else ""
    unknown = f"; {rescues.unknown_worker} with the worker unknown" if rescues.unknown_worker else ""
    r.expect("rescues explained by a fault", f"{len(rescues.explained)}/{rescues.total}",
             not rescues.unexplained, f"{kinds}{latest}{unknown}"
             + (f"; unexplained {_sample(rescues.unexplained)}" if rescues.unexplained else ""))
    note = ", ".join(f"{c}: {n}" for c, n in sorted(dup_causes.items())) or "none"
    if allow_duplicates and not loss_window:
        r.expect("duplicated (each explained)", len(duplicated), not unexplained,
                 f"{note}{'; unexplained ' + _sample(unexplained) if unexplained else ''}")
    elif allow_duplicates:
        r.add("duplicated", len(duplicated), None, note)
    else:
        r.expect("duplicated", len(duplicated), not duplicated, note)
    r.expect("concurrent executions in one worker", len(overlapping), not overlapping,
             _sample(overlapping) or "an older attempt still running here was interrupted first")
    r.expect("rescued attempts stopped in time", f"{stale_checked - len(ran_late)}/{stale_checked}",
             not ran_late, "by max(rescue, fault end) + lease/3 + "
             f"{STOP_MARGIN:g}s" + (f"; not: {_sample(ran_late)}" if ran_late else ""))
    r.expect("succeeded jobs that ended failed", len(succeeded_failed), not succeeded_failed,
             _sample(succeeded_failed))
    r.expect("completions without a returned handler", len(unbacked), not unbacked, _sample(unbacked))
    r.expect("stale commits accepted", len(stale_accepted), not stale_accepted, _sample(stale_accepted))
    summed = sum(terminal_acked.values())
    reconciled = summed == len(acked) - (len(lost) if loss_window else 0)
    r.expect("acknowledged = completed + failed + cancelled", f"{len(acked)} = " + " + ".join(
        str(terminal_acked.get(s, 0)) for s in ("completed", "failed", "cancelled")), reconciled)
    r.expect("left active/waiting/scheduled", left, left == 0,
             f"active {counts['active']}, waiting {counts['waiting']}, scheduled {counts['scheduled']}")
    return Analysis(traces, enqueues, dict(starts), dict(returned), final, dup_causes,
                    duplicated, counts, stream_len, executions, rescues, faults)


def _stale_commits(commits: list[Commit], traces: dict[str, JobTrace]) -> list[tuple[str, int]]:
    """Commits the ledger saw accepted although another attempt owned the job: the token
    the worker presented differs from the job's token at that point of the stream."""
    bad = []
    for c in commits:
        if not c.accepted:
            continue
        trace = traces.get(c.job)
        tokens = {tok for _, ev, state, tok in trace.events
                  if ev in ("retry", "release") or is_terminal(ev, state)} if trace else set()
        if c.token not in tokens:
            bad.append((c.job, c.token))
    return bad


def _sample(items: list[Any], n: int = 3) -> str:
    if not items:
        return ""
    shown = ", ".join(str(i) for i in items[:n])
    return f"e.g. {shown}" + (f" (+{len(items) - n})" if len(items) > n else "")


def print_reports(reports: list[Report]) -> None:
    """One table per scenario: rich when installed, plain text otherwise."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        for rep in reports:
            verdict = "PASS" if rep.passed else "FAIL"
            print(f"\n== {rep.name}: {verdict} ({rep.seconds:.1f}s) ==")
            for c in rep.checks:
                mark = {True: "ok  ", False: "FAIL", None: "    "}[c.ok]
                print(f"  {mark} {c.metric:<48} {c.value!s:<22} {c.note}")
            if rep.error:
                print(f"  FAIL scenario error: {rep.error}")
        return
    console = Console(width=max(Console().width, 130))
    for rep in reports:
        verdict = "[green]PASS[/]" if rep.passed else "[red]FAIL[/]"
        table = Table(title=f"{rep.name}: {verdict} ({rep.seconds:.1f}s)", title_justify="left")
        table.add_column("check")
        table.add_column("value", justify="right")
        table.add_column("")
        table.add_column("note", overflow="fold")
        for c in rep.checks:
            mark = {True: "[green]ok[/]", False: "[red]FAIL[/]", None: ""}[c.ok]
            table.add_row(c.metric, str(c.value), mark, c.note)
        if rep.error:
            table.add_row("scenario error", "", "[red]FAIL[/]", rep.error)
        console.print(table)
