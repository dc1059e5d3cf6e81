"""Explaining rescues and re-runs by the faults the harness injected (used by the checker).

A rescue is explained only by a fault on that attempt's worker (killed, stopped, cut off
by its proxy) or the server being down, in effect at the claim, with the rescue between
the fault's start + lease / 2 and its end + lease + rescue interval + :data:`SLACK`.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .ledger import Execution, Ledger, WorkerInfo

if TYPE_CHECKING:
    from .checker import JobTrace

__all__ = ["DELAYS", "EPSILON", "SLACK", "STOP_MARGIN", "Fault", "Rescues", "concurrent_runs",
           "explain_rescues", "injected_faults", "ran_on", "worker_pid"]

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
#: Faults after which the process never runs again.
KILLS = frozenset({"SIGKILL"})


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
                # the end, even by a millisecond (stream ids are whole ms), is not its victim.
                # Except a kill: the harness stamps it, then signals, and a claim the victim
                # sent just before it died can still run on the server after the stamp (its
                # reply never read). A killed process never runs again, so every attempt of
                # its pid is the kill's victim.
                after = f.end < since and f.kind not in KILLS
                if not mine or after or (f.kind in DELAYS and f.end - f.start < lease / 2):
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
