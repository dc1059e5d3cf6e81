"""A redis-server of the harness's own: a free port, a temp dir, the persistence a scenario
needs. Stopped by pid (SIGTERM, then SIGKILL), crashed with SIGKILL, restarted on the same
port and dir so AOF recovery is what the clients see.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from .workers import die_with_parent

__all__ = ["RedisServer", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """``appendfsync``: "always", "everysec" or None (no AOF); ``maxmemory`` in bytes (0 = no
    limit) with the ``noeviction`` policy, as shunter's startup check asks for."""

    def __init__(self, *, appendfsync: str | None = None, maxmemory: int = 0,
                 port: int | None = None, binary: str = "redis-server") -> None:
        self.appendfsync = appendfsync
        self.maxmemory = maxmemory
        self.port = port or free_port()
        self.binary = shutil.which(binary) or binary
        self.dir = Path(tempfile.mkdtemp(prefix=f"faults-redis-{self.port}-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def args(self) -> list[str]:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--logfile", "redis.log", "--daemonize", "no",
                "--maxmemory-policy", "noeviction", "--maxmemory", str(self.maxmemory)]
        if self.appendfsync:
            args += ["--appendonly", "yes", "--appendfsync", self.appendfsync]
        else:
            args += ["--appendonly", "no"]
        return args

    def start(self, timeout: float = 30.0) -> RedisServer:
        """Start (or restart, on the same port and dir) and wait until it answers PING
        after loading its AOF."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"redis on port {self.port} is already running")
        self.proc = subprocess.Popen(self.args(), cwd=self.dir, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=die_with_parent)
        self.starts += 1
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.proc.returncode}: "
                                       f"{self.log_tail()}")
                try:
                    if client.ping():
                        return self
                except redis.BusyLoadingError:
                    pass
                except (redis.ConnectionError, redis.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis on port {self.port} did not start: {self.log_tail()}")
                time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """Crash it (SIGKILL): no shutdown save, no final fsync."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop by pid; SIGKILL if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self, *, crash: bool = True) -> None:
        self.kill() if crash else self.stop()
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=False)

    def log_tail(self, lines: int = 5) -> str:
        with contextlib.suppress(OSError):
            return " | ".join((self.dir / "redis.log").read_text().splitlines()[-lines:])
        return ""

    def cleanup(self) -> None:
        """Stop and delete the data dir."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
