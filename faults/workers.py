"""Real worker processes (``python -m faults.worker_main``) started, signalled and stopped
by the harness, always by pid.

A :class:`Fleet` keeps every process it ever started, so a ``finally: fleet.stop_all()``
leaves nothing behind; on Linux each child also gets PR_SET_PDEATHSIG so it dies with a
harness that was itself killed. Exits the harness did not cause are counted: "no process
exits" is one of the checks.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .ledger import Ledger

__all__ = ["Fleet", "WorkerProcess", "die_with_parent"]

_PR_SET_PDEATHSIG = 1
_REPO = Path(__file__).resolve().parent.parent


def die_with_parent() -> None:
    """preexec_fn: SIGKILL this child when the harness dies (Linux only; best effort)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class WorkerProcess:
    argv: list[str]
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    expected_exit: bool = False  #: the harness killed or stopped it on purpose
    stopped: bool = False  #: SIGSTOPped and not yet continued

    def start(self) -> WorkerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         env=self.env, cwd=_REPO, preexec_fn=die_with_parent)
        finally:
            log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            if sig in (signal.SIGKILL, signal.SIGTERM):
                self.expected_exit = True
            os.kill(self.pid, sig)
            if sig == signal.SIGSTOP:
                self.stopped = True
            elif sig == signal.SIGCONT:
                self.stopped = False

    def wait(self, timeout: float) -> bool:
        assert self.proc is not None
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (graceful), then SIGKILL after ``timeout``."""
        if not self.alive():
            return
        if self.stopped:
            self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        if not self.wait(timeout):
            self.signal(signal.SIGKILL)
            self.wait(10)


@dataclass
class Fleet:
    """The worker processes of one queue, all with the same options."""

    queue: str
    redis_url: str
    ledger: Ledger
    workdir: Path
    lease: float
    concurrency: int = 8
    mode: str = "normal"
    options: dict[str, object] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    procs: list[WorkerProcess] = field(default_factory=list)

    def argv(self, redis_url: str | None = None) -> list[str]:
        argv = [sys.executable, "-m", "faults.worker_main", "--queue", self.queue,
                "--redis", redis_url or self.redis_url, "--ledger", self.ledger.path,
                "--lease", str(self.lease), "--concurrency", str(self.concurrency), "--mode", self.mode]
        for name, value in self.options.items():
            argv += [f"--{name.replace('_', '-')}", str(value)]
        return argv

    def spawn(self, n: int = 1, wait: bool = True, timeout: float = 60.0,
              redis_url: str | None = None) -> list[WorkerProcess]:
        """Start ``n`` processes (``redis_url``: connect there instead, e.g. a proxy)."""
        env = {**os.environ, **self.env, "PYTHONPATH": _pythonpath()}
        new = []
        for _ in range(n):
            log = self.workdir / f"worker-{self.queue}-{len(self.procs)}.log"
            proc = WorkerProcess(self.argv(redis_url), log, env).start()
            self.procs.append(proc)
            new.append(proc)
        if wait:
            self.wait_ready(new, timeout)
        return new

    def wait_ready(self, procs: list[WorkerProcess], timeout: float = 60.0) -> None:
        """Poll the ledger until each process has announced itself (imports done, worker
        built); a process that dies first is an error."""
        deadline = time.monotonic() + timeout
        wanted = {p.pid for p in procs}
        while True:
            ready = {pid for _, _, pid, _ in self.ledger.harness_events("worker_ready")}
            if wanted <= ready:
                return
            dead = [p for p in procs if not p.alive() and p.pid not in ready]
            if dead:
                raise RuntimeError(f"worker {dead[0].pid} died during startup: see {dead[0].log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers {sorted(wanted - ready)} not ready after {timeout}s")
            time.sleep(0.05)

    def alive(self) -> list[WorkerProcess]:
        return [p for p in self.procs if p.alive()]

    def unexpected_exits(self) -> list[WorkerProcess]:
        return [p for p in self.procs if not p.alive() and not p.expected_exit]

    def replace_dead(self, on_replace: Callable[[WorkerProcess], None] | None = None) -> int:
        """Restart processes that died by themselves (a poison pill killed them), as a
        supervisor (systemd, Kubernetes) would. Returns how many were restarted."""
        n = 0
        for proc in list(self.procs):
            if not proc.alive() and not proc.expected_exit:
                proc.expected_exit = True  # accounted for: replaced
                if on_replace:
                    on_replace(proc)
                self.spawn(1, wait=False)
                n += 1
        return n

    def kill(self, proc: WorkerProcess, sig: int) -> float:
        """Send ``sig`` to one worker and record it in the ledger; returns the time."""
        when = self.ledger.harness(signal.Signals(sig).name, proc.pid, self.queue)
        proc.signal(sig)
        return when

    def stop_all(self, timeout: float = 30.0) -> None:
        """Graceful stop of every live process, in parallel, then SIGKILL stragglers."""
        live = self.alive()
        for proc in live:
            if proc.stopped:
                proc.signal(signal.SIGCONT)
            proc.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in live:
            if not proc.wait(max(deadline - time.monotonic(), 0.1)):
                proc.signal(signal.SIGKILL)
                proc.wait(10)


def _pythonpath() -> str:
    """Children import ``faults`` from the repo root and ``shunter`` from wherever the
    harness found it."""
    parts = [str(_REPO), *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    return os.pathsep.join(parts)
