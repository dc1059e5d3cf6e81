"""Runs N worker processes and keeps them running (``shunter worker --processes N``).

Owned by the main thread of the ``shunter worker`` process. Each child is a full
``shunter worker`` (same target and options) in a session of its own, so Ctrl-C in a
terminal reaches only the supervisor, which forwards one SIGTERM: the children finish
their in-flight jobs (a second Ctrl-C forwards a second SIGTERM: hand jobs back now).
A child that exits while no stop was asked for is restarted, with a growing delay when it
keeps crashing. On Linux the children also get SIGTERM if the supervisor itself dies.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

from ..embedded import die_with_parent_hook

__all__ = ["Supervisor"]

log = logging.getLogger("shunter.supervisor")

#: A child that ran at least this long before crashing restarts without delay growth.
HEALTHY_AFTER = 30.0
MAX_RESTART_DELAY = 30.0


@dataclass(slots=True)
class _Slot:
    number: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    crashes: int = 0
    restart_at: float | None = None
    done: bool = False
    codes: list[int] = field(default_factory=list)


class Supervisor:
    """Start ``processes`` copies of ``argv`` and supervise them until stopped.

    With ``burst=True`` a child that exits with status 0 is done (its queues were empty);
    the supervisor returns once every child is done.
    """

    def __init__(self, argv: Sequence[str], processes: int, *, burst: bool = False) -> None:
        self.argv = list(argv)
        self.burst = burst
        self.slots = [_Slot(n) for n in range(1, processes + 1)]
        self.signals = 0
        self.restarts = 0

    def _spawn(self, slot: _Slot) -> None:
        slot.proc = subprocess.Popen(self.argv, start_new_session=True,
                                     preexec_fn=die_with_parent_hook())
        slot.started, slot.restart_at = time.monotonic(), None
        log.info("worker process %d started (pid %d)", slot.number, slot.proc.pid)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signals += 1
        log.info("%s: stopping %d worker process(es)%s", signal.Signals(signum).name,
                 len(self.slots), "" if self.signals == 1 else " now")
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.send_signal(signal.SIGTERM)

    def _exited(self, slot: _Slot, code: int) -> None:
        slot.codes.append(code)
        slot.proc = None
        if self.signals or (self.burst and code == 0):
            slot.done = True
            return
        ran = time.monotonic() - slot.started
        slot.crashes = 0 if ran >= HEALTHY_AFTER else slot.crashes + 1
        delay = min(0.5 * 2 ** max(slot.crashes - 1, 0), MAX_RESTART_DELAY) if slot.crashes else 0.0
        log.warning("worker process %d exited with status %d after %.1fs; restarting in %.1fs",
                    slot.number, code, ran, delay)
        slot.restart_at = time.monotonic() + delay
        self.restarts += 1

    def run(self, poll: float = 0.1) -> int:
        """Supervise until every child is done; 0 if they all ended cleanly."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for slot in self.slots:
                self._spawn(slot)
            while not all(slot.done for slot in self.slots):
                time.sleep(poll)
                for slot in self.slots:
                    if slot.proc is not None and (code := slot.proc.poll()) is not None:
                        self._exited(slot, code)
                    if slot.proc is None and not slot.done and slot.restart_at is not None:
                        if self.signals:
                            slot.done = True
                        elif time.monotonic() >= slot.restart_at:
                            self._spawn(slot)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        clean = all(not slot.codes or slot.codes[-1] == 0 for slot in self.slots)
        return 0 if clean else 1
