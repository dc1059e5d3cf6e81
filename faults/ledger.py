"""The independent ledger: what producers, handlers and the harness saw, in SQLite (WAL).

It is never the Redis under test, so a Redis that loses, duplicates or invents jobs cannot
hide it from the checker. Every process of a scenario opens the same file: the producer
records each enqueue (``unknown`` before it is sent, then ``ok`` or ``error``), handlers
record every execution start and end (job, attempt token, attempt number, pid), the
worker's commit wrapper records whether each fenced write was accepted, each worker
process records itself (pid, name, lease), and the harness records the faults it injected
(kills, stops, restarts; network faults of a worker's proxy) with their times.

Durability: ``synchronous=OFF`` survives the death of any writer process (SIGKILL is the
fault we inject); only an OS crash could lose rows, and the ledger's host is not under test.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Commit", "Execution", "Ledger", "WorkerInfo"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS enqueue (
    queue TEXT NOT NULL, job TEXT NOT NULL, status TEXT NOT NULL, error TEXT,
    ts REAL NOT NULL, PRIMARY KEY (queue, job));
CREATE TABLE IF NOT EXISTS execution (
    queue TEXT NOT NULL, job TEXT NOT NULL, token INTEGER NOT NULL, attempt INTEGER NOT NULL,
    pid INTEGER NOT NULL, phase TEXT NOT NULL, outcome TEXT, ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS execution_job ON execution (queue, job);
CREATE TABLE IF NOT EXISTS commit_log (
    queue TEXT NOT NULL, job TEXT NOT NULL, token INTEGER NOT NULL, verb TEXT NOT NULL,
    accepted INTEGER NOT NULL, detail TEXT, pid INTEGER NOT NULL, ts REAL NOT NULL);
CREATE TABLE IF NOT EXISTS harness (
    ts REAL NOT NULL, kind TEXT NOT NULL, pid INTEGER, detail TEXT);
CREATE TABLE IF NOT EXISTS fault (
    kind TEXT NOT NULL, pid INTEGER, start REAL NOT NULL, end REAL NOT NULL, detail TEXT);
CREATE TABLE IF NOT EXISTS worker (
    pid INTEGER PRIMARY KEY, queue TEXT NOT NULL, name TEXT NOT NULL, lease REAL NOT NULL,
    concurrency INTEGER NOT NULL, ts REAL NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Execution:
    job: str
    token: int
    attempt: int
    pid: int
    phase: str  #: "start" or "end"
    outcome: str | None
    ts: float


@dataclass(frozen=True, slots=True)
class Commit:
    job: str
    token: int
    verb: str
    accepted: bool
    detail: str
    pid: int
    ts: float


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    pid: int
    queue: str
    name: str  #: the worker id it gives shunter (in claim events and job hashes)
    lease: float
    concurrency: int
    ts: float  #: when it was ready


class Ledger:
    """One connection to the ledger file; safe to open from many processes at once."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.pid = os.getpid()
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=60,
                                  check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("PRAGMA busy_timeout=60000")
        self.db.executescript(_SCHEMA)
        # Sync handlers write from worker threads while async ones write on the loop.
        self.lock = threading.Lock()

    def close(self) -> None:
        self.db.close()

    # -- writers ---------------------------------------------------------------------------
    def enqueue(self, queue: str, jobs: Iterable[str], status: str, error: str = "") -> None:
        """Record the outcome of enqueue calls. An ``ok`` is final: a later ``unknown`` for
        a re-send of the same id (after a lost reply) never downgrades it."""
        now = time.time()
        rows = [(queue, job, status, error or None, now) for job in jobs]
        with self.lock, _tx(self.db):
            self.db.executemany(
                "INSERT INTO enqueue VALUES (?, ?, ?, ?, ?) ON CONFLICT (queue, job) DO UPDATE "
                "SET status = excluded.status, error = excluded.error, ts = excluded.ts "
                "WHERE enqueue.status != 'ok'", rows)

    def execution(self, queue: str, job: str, token: int, attempt: int, phase: str,
                  outcome: str | None = None) -> None:
        with self.lock:
            self.db.execute("INSERT INTO execution VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (queue, job, token, attempt, self.pid, phase, outcome, time.time()))

    def commit(self, queue: str, job: str, token: int, verb: str, accepted: bool,
               detail: str = "") -> None:
        with self.lock:
            self.db.execute("INSERT INTO commit_log VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (queue, job, token, verb, int(accepted), detail, self.pid, time.time()))

    def harness(self, kind: str, pid: int | None = None, detail: str = "") -> float:
        now = time.time()
        with self.lock:
            self.db.execute("INSERT INTO harness VALUES (?, ?, ?, ?)", (now, kind, pid, detail))
        return now

    def fault(self, kind: str, pid: int | None, start: float, end: float, detail: str = "") -> None:
        """A fault with a duration (a network fault of the proxy in front of worker ``pid``;
        ``pid`` None: every process, e.g. the server itself was down)."""
        with self.lock:
            self.db.execute("INSERT INTO fault VALUES (?, ?, ?, ?, ?)", (kind, pid, start, end, detail))

    def worker(self, queue: str, name: str, lease: float, concurrency: int) -> None:
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO worker VALUES (?, ?, ?, ?, ?, ?)",
                            (self.pid, queue, name, lease, concurrency, time.time()))

    # -- readers ---------------------------------------------------------------------------
    def enqueues(self, queue: str) -> dict[str, tuple[str, str]]:
        """job -> (status, error) for every enqueue the producer attempted."""
        rows = self.db.execute("SELECT job, status, COALESCE(error, '') FROM enqueue WHERE queue = ?",
                               (queue,))
        return {job: (status, error) for job, status, error in rows}

    def recent_pids(self, queue: str, rows: int = 500) -> set[int]:
        """Pids that started a handler among the newest ``rows`` executions: busy workers,
        cheaply (reading every execution would cost the harness seconds of CPU mid-storm
        and starve the workers it is testing)."""
        found = self.db.execute(
            "SELECT DISTINCT pid FROM (SELECT pid, phase FROM execution WHERE queue = ? "
            "ORDER BY rowid DESC LIMIT ?) WHERE phase = 'start'", (queue, rows))
        return {pid for (pid,) in found}

    def executions(self, queue: str) -> list[Execution]:
        rows = self.db.execute(
            "SELECT job, token, attempt, pid, phase, outcome, ts FROM execution WHERE queue = ? "
            "ORDER BY rowid", (queue,))
        return [Execution(*row) for row in rows]

    def commits(self, queue: str) -> list[Commit]:
        rows = self.db.execute(
            "SELECT job, token, verb, accepted, COALESCE(detail, ''), pid, ts FROM commit_log "
            "WHERE queue = ? ORDER BY rowid", (queue,))
        return [Commit(job, token, verb, bool(acc), detail, pid, ts)
                for job, token, verb, acc, detail, pid, ts in rows]

    def harness_events(self, kind: str | None = None) -> list[tuple[float, str, int | None, str]]:
        sql = "SELECT ts, kind, pid, COALESCE(detail, '') FROM harness"
        rows = self.db.execute(sql + " WHERE kind = ? ORDER BY ts" if kind else sql + " ORDER BY ts",
                               (kind,) if kind else ())
        return list(rows)

    def faults(self) -> list[tuple[str, int | None, float, float, str]]:
        """(kind, pid, start, end, detail) of every fault recorded with a duration."""
        return list(self.db.execute(
            "SELECT kind, pid, start, end, COALESCE(detail, '') FROM fault ORDER BY start"))

    def workers(self) -> dict[int, WorkerInfo]:
        rows = self.db.execute("SELECT pid, queue, name, lease, concurrency, ts FROM worker")
        return {row[0]: WorkerInfo(*row) for row in rows}

    def count(self, table: str, where: str = "1", args: tuple[object, ...] = ()) -> int:
        assert table in ("enqueue", "execution", "commit_log", "harness", "fault", "worker")
        return int(self.db.execute(f"SELECT COUNT(*) FROM {table} WHERE {where}", args).fetchone()[0])


class _tx:
    """BEGIN IMMEDIATE ... COMMIT around a batch (the connection is in autocommit mode)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
