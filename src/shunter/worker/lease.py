"""The lease keeper: a thread, with its own blocking connection, that renews the leases of
every job this worker holds, so a handler that blocks the event loop keeps its lease.

It owns nothing on the loop: results go back with ``call_soon_threadsafe`` (lease lost,
cancellation requested). It also measures event-loop lag, by timing how long a callback
it schedules takes to run. Jobs past their hard deadline (timeout + grace) are no longer
renewed: if the loop is stuck so badly that the timeout cannot fire, the lease runs out
and another worker rescues the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..storage import BlockingStorage
from ..storage.keys import QueueKeys

__all__ = ["LeaseKeeper"]

log = logging.getLogger("shunter.lease")


@dataclass(slots=True)
class Held:
    keys: QueueKeys
    job_id: str
    token: int
    hard_deadline: float | None  #: monotonic time after which we stop renewing


class LeaseKeeper(threading.Thread):
    def __init__(self, storage: BlockingStorage, loop: asyncio.AbstractEventLoop, lease_ms: int,
                 on_lost: Callable[[str, str, int], None],
                 on_cancel: Callable[[str, str, int], None]) -> None:
        super().__init__(name="shunter-lease-keeper", daemon=True)
        self.storage = storage
        self.loop = loop
        self.lease_ms = lease_ms
        self.interval = lease_ms / 3000
        self.on_lost = on_lost
        self.on_cancel = on_cancel
        #: Keyed by attempt, not by job: an attempt that lost its lease may still be
        #: winding down in this worker when the same job is claimed here again.
        self._held: dict[tuple[str, str, int], Held] = {}
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._probe_sent: float | None = None
        #: Largest event-loop lag seen (seconds) and the most recent one.
        self.max_loop_lag = 0.0
        self.loop_lag = 0.0
        self.renewals = 0
        self.errors = 0

    @staticmethod
    def held_key(queue: str, job_id: str, token: int) -> tuple[str, str, int]:
        """One attempt: (queue, job id, fencing token)."""
        return (queue, job_id, token)

    def add(self, keys: QueueKeys, job_id: str, token: int, hard_deadline: float | None) -> None:
        """Renew this attempt's lease until :meth:`remove` or ``hard_deadline`` (monotonic)."""
        with self._lock:
            self._held[self.held_key(keys.name, job_id, token)] = Held(keys, job_id, token,
                                                                      hard_deadline)

    def set_deadline(self, queue: str, job_id: str, token: int, hard_deadline: float | None) -> None:
        """Move an attempt's hard deadline (a sync handler's time runs from its start)."""
        with self._lock:
            held = self._held.get(self.held_key(queue, job_id, token))
            if held is not None:
                held.hard_deadline = hard_deadline

    def remove(self, queue: str, job_id: str, token: int) -> None:
        """Stop renewing this attempt (only this one: other attempts of the job stay)."""
        with self._lock:
            self._held.pop(self.held_key(queue, job_id, token), None)

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self._probe_loop()
            try:
                self.tick()
            except Exception as exc:  # Redis down: keep trying; leases may lapse meanwhile
                self.errors += 1
                log.warning("lease renewal failed: %s", exc)
        self.storage.close()

    def tick(self) -> None:
        now = time.monotonic()
        by_queue: dict[str, list[Held]] = {}
        with self._lock:
            for held in self._held.values():
                if held.hard_deadline is None or now < held.hard_deadline:
                    by_queue.setdefault(held.keys.name, []).append(held)
        for group in by_queue.values():
            keys = group[0].keys
            codes = self.storage.renew(keys, self.lease_ms, [(h.job_id, h.token) for h in group])
            self.renewals += len(group)
            for held, code in zip(group, codes, strict=True):
                code = int(code)
                if code < 0:
                    self.remove(keys.name, held.job_id, held.token)
                    self._notify(self.on_lost, keys.name, held.job_id, held.token)
                elif code == 2:
                    self._notify(self.on_cancel, keys.name, held.job_id, held.token)

    def _notify(self, fn: Callable[[str, str, int], None], queue: str, job_id: str, token: int) -> None:
        with contextlib.suppress(RuntimeError):  # loop closed: the worker is gone anyway
            self.loop.call_soon_threadsafe(fn, queue, job_id, token)

    def _probe_loop(self) -> None:
        now = time.monotonic()
        if self._probe_sent is not None:
            # the previous probe has not run yet: the loop is blocked at least this long
            self.loop_lag = now - self._probe_sent
            self.max_loop_lag = max(self.max_loop_lag, self.loop_lag)
            if self.loop_lag > self.interval * 2:
                log.warning("event loop blocked for %.1fs (a handler is running blocking code "
                            "on the loop; leases are still being renewed)", self.loop_lag)
            return
        self._probe_sent = now
        try:
            self.loop.call_soon_threadsafe(self._probe_ran, now)
        except RuntimeError:
            self._probe_sent = None

    def _probe_ran(self, sent: float) -> None:
        self.loop_lag = time.monotonic() - sent
        self.max_loop_lag = max(self.max_loop_lag, self.loop_lag)
        self._probe_sent = None
