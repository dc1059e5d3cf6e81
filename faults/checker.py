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

import math
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import redis

from shunter.storage.keys import QueueKeys

from .ledger import Commit, Execution, Ledger, WorkerInfo

__all__ = ["Analysis", "Check", "Fault", "JobTrace", "Report", "Rescues", "analyse", "concurrent_runs",
           "explain_rescues", "injected_faults", "print_reports", "ran_on", "worker_pid"]

TERMINAL_EVENTS = {"complete", "fail", "abort"}

#: Seconds a rescue may come after its fault's end + lease + rescue interval. The lease
#: and interval are the bound of the mechanism (the last renewal came before the fault,
#: so the lease is gone by end + lease; some worker runs a rescue pass every lease / 2);
#: the slack covers what adds to it on a loaded 2-CPU runner: the maintenance loop sleeps
#: its interval after a pass (its own round trips and the heartbeat come on top), event
#: loop lag of the rescuing worker, and the harness stamping a fault just before it acts.
#: Measured (short profile, 2 CPUs): the latest rescues came at end + lease + interval
#: - 0.01 s (a poison pill's SIGKILL) and - 0.09 s (the kill storm under load).
SLACK = 1.0
#: Seconds an interrupted handler may take to end after the lease keeper's refused
#: renewal: the callback crosses to the event loop, the handler is cancelled, its end is
#: written to the ledger (loop lag on a loaded runner included).
STOP_MARGIN = 0.5
#: Clock tolerance between harness stamps (time.time) and stream ids (the server's TIME,
#: ms) on the same host.
EPSILON = 0.05
_WORKER_PID = re.compile(r"^faults-(\d+)$")
#: Faults that only delay a live worker's requests (nothing is lost): a lease runs out
#: only if the renewals are late by more than 2/3 of it, so they explain a rescue only
#: when they lasted at least lease / 2. Kills, cuts, lost replies and a server down lose
#: requests (a claim's reply, the process itself) and explain one whatever they lasted.
DELAYS = frozenset({"SIGSTOP", "stall", "hold", "refuse"})


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


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault the harness injected, from the ledger: on one worker process (``pid``), or
    on every process (``pid`` None: the server was down). ``end`` is when it stopped acting
    (SIGCONT, server up, the proxy resumed); a kill or a cut ends when it starts."""

    kind: str
    pid: int | None
    start: float
    end: float
    detail: str = ""


def injected_faults(ledger: Ledger) -> list[Fault]:
    """Every fault recorded in the ledger: the harness's signals (SIGKILL; SIGSTOP until
    the SIGCONT of the same pid), Redis crashes (until it was up again) and the faults of
    each worker's proxy (recorded with their own start and end)."""
    faults = []
    stopped: dict[int, float] = {}
    down: float | None = None
    for ts, kind, pid, detail in ledger.harness_events():
        if kind == "SIGKILL" and pid is not None:
            faults.append(Fault("SIGKILL", pid, ts, ts, detail))
        elif kind == "SIGSTOP" and pid is not None:
            stopped.setdefault(pid, ts)
        elif kind == "SIGCONT" and pid in stopped:
            faults.append(Fault("SIGSTOP", pid, stopped.pop(pid), ts, detail))
        elif kind == "redis_crash" and down is None:
            down = ts
        elif kind == "redis_up" and down is not None:
            faults.append(Fault("redis down", None, down, ts, detail))
            down = None
    faults += [Fault("SIGSTOP", pid, ts, math.inf, "never continued") for pid, ts in stopped.items()]
    if down is not None:
        faults.append(Fault("redis down", None, down, math.inf, "never up"))
    faults += [Fault(kind, pid, start, end, detail) for kind, pid, start, end, detail in ledger.faults()]
    return sorted(faults, key=lambda f: f.start)


def worker_pid(name: str | None) -> int | None:
    """The pid of a fault-suite worker from its id (``faults-<pid>``, see worker_main)."""
    found = _WORKER_PID.match(name or "")
    return int(found.group(1)) if found else None


@dataclass
class Rescues:
    """Every rescue of a queue, each tied to the fault that explains it (or not)."""

    explained: dict[tuple[str, int], Fault] = field(default_factory=dict)  #: (job, token)
    unexplained: list[tuple[str, int, str]] = field(default_factory=list)  #: (job, token, why)
    at: dict[tuple[str, int], float] = field(default_factory=dict)  #: (job, token) -> rescue time
    by_kind: Counter[str] = field(default_factory=Counter)
    unknown_worker: int = 0  #: explained by a fault of any worker of the queue
    latest: float = -math.inf  #: the largest (rescue - (fault end + lease + interval)), s

    @property
    def total(self) -> int:
        return len(self.explained) + len(self.unexplained)


def explain_rescues(traces: dict[str, JobTrace], starts: dict[str, list[tuple[int, int, int, float]]],
                    faults: list[Fault], workers: dict[int, WorkerInfo], queue: str) -> Rescues:
    """Tie each ``rescue`` of attempt (job, token) to an injected fault on that attempt.

    The attempt's worker is the one its claim event names, else the process whose handler
    ran that token (the ledger); a fault explains the rescue when it hit that worker (or
    every process), overlapped the attempt (it ended after the claim) and the rescue came
    between its start + lease / 2 and its end + lease + rescue interval (lease / 2) +
    :data:`SLACK`. The lower bound: the attempt's last renewal came at most lease / 3
    before the fault (the keeper renews every lease / 3), so the lease ran out no earlier
    than start + 2/3 lease; lease / 2 leaves a sixth of the lease for late renewals.

    A fault that only delays requests (:data:`DELAYS`) must have lasted lease / 2. An
    attempt whose worker is unknown (claimed, never started, and a claim event without a
    worker) may be explained by a fault of any worker of the queue."""
    out = Rescues()
    pids = {pid for pid, w in workers.items() if w.queue == queue}
    default_lease = max((w.lease for w in workers.values() if w.queue == queue), default=0.0)
    ran_by = {(job, tok): pid for job, runs in starts.items() for tok, _, pid, _ in runs}
    for job, trace in traces.items():
        claimed: dict[int, float] = {}
        for ms, ev, state, tok in trace.events:
            if ev == "claim":
                claimed[tok] = ms / 1000
            if ev != "rescue":
                continue
            at = ms / 1000
            out.at[(job, tok)] = at
            pid = worker_pid(trace.workers.get(tok)) or ran_by.get((job, tok))
            lease = workers[pid].lease if pid in workers else default_lease
            since = claimed.get(tok, -math.inf)
            best: tuple[float, Fault] | None = None
            for f in faults:
                if f.start + lease / 2 > at + EPSILON:
                    break
                mine = f.pid is None or f.pid == pid or (pid is None and f.pid in pids)
                # stamped before the signal (or by the proxy once it resumed): a claim after
                # the end, even by a millisecond (stream ids are whole ms), is not its victim
                if not mine or f.end < since or (f.kind in DELAYS and f.end - f.start < lease / 2):
                    continue
                late = at - (f.end + lease * 1.5)
                if late <= SLACK and (best is None or late < best[0]):
                    best = (late, f)
            if best is None:
                out.unexplained.append((job, tok, f"{state} at {at:.2f}, worker pid {pid}"))
                continue
            out.explained[(job, tok)] = best[1]
            out.by_kind[best[1].kind] += 1
            out.latest = max(out.latest, best[0])
            if pid is None:
                out.unknown_worker += 1
    return out


def ran_on(executions: list[Execution], rescues: Rescues, faults: list[Fault],
           workers: dict[int, WorkerInfo]) -> tuple[list[tuple[str, int, str]], int]:
    """Rescued attempts whose handler went on running past the time its worker could
    know: max(rescue, end of the fault that explains it, if that fault hit this worker)
    + lease / 3 (the next renewal, refused) + :data:`STOP_MARGIN`. Attempts whose process
    was killed are skipped, and so are those with no end yet whose deadline has not passed
    at analysis time (too early to tell). Returns the violations and how many attempts
    were checked."""
    first: dict[tuple[str, int], Execution] = {}
    ended: dict[tuple[str, int], Execution] = {}
    for ex in executions:
        if ex.phase == "start":
            first.setdefault((ex.job, ex.token), ex)
        else:
            ended.setdefault((ex.job, ex.token), ex)
    killed = {f.pid: f.start for f in faults if f.kind == "SIGKILL"}
    now = time.time()
    bad, checked = [], 0
    for key, at in rescues.at.items():
        start = first.get(key)
        if start is None or start.pid in killed:  # a dead handler ran on nowhere
            continue
        checked += 1
        knows = at
        fault = rescues.explained.get(key)
        if fault is not None and fault.pid in (None, start.pid):
            knows = max(at, fault.end)
        lease = workers[start.pid].lease if start.pid in workers else 0.0
        deadline = knows + lease / 3 + STOP_MARGIN
        end = ended.get(key)
        if end is None and now <= deadline:
            checked -= 1
        elif end is None:
            bad.append((key[0], key[1], "still running"))
        elif end.ts > deadline:
            bad.append((key[0], key[1], f"{end.outcome} {end.ts - knows:.2f}s after it could know"))
    return bad, checked


def concurrent_runs(executions: list[Execution]) -> list[tuple[str, int, int, int]]:
    """(job, older token, newer token, pid): two attempts of one job that overlapped in
    time in one worker process while the older one was not interrupted (its handler did
    not end with CancelledError before the newer one started, or never ended)."""
    runs: dict[tuple[str, int], dict[int, list[Any]]] = defaultdict(dict)
    for ex in executions:
        attempt = runs[(ex.job, ex.pid)].setdefault(ex.token, [math.inf, math.inf, None])
        if ex.phase == "start":
            attempt[0] = min(attempt[0], ex.ts)
        else:
            attempt[1], attempt[2] = ex.ts, ex.outcome
    bad = []
    for (job, pid), by_token in runs.items():
        ordered = sorted(by_token.items())
        for i, (old, (_, old_end, outcome)) in enumerate(ordered):
            for new, (new_start, _, _) in ordered[i + 1:]:
                if new_start < old_end and outcome != "CancelledError":
                    bad.append((job, old, new, pid))
    return bad


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
