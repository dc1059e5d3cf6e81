"""A throwaway redis-server on a free port for one benchmark run, and its own ceiling
measured with redis-benchmark (SET and EVALSHA of a trivial script, with and without
pipelining)."""

from __future__ import annotations

import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class BenchServer:
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="shunter-bench-")))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> BenchServer:
        binary = shutil.which("redis-server") or shutil.which("valkey-server")
        if binary is None:
            raise SystemExit("bench needs redis-server (or valkey-server) on PATH")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        client.close()
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def version(self) -> str:
        info = redis.Redis(port=self.port).info("server")
        return str(info.get("valkey_version") or info.get("redis_version"))

    def commands_processed(self) -> int:
        return int(redis.Redis(port=self.port).info("stats")["total_commands_processed"])

    def flush(self) -> None:
        # The benchmark server is ours alone; flushing between workloads keeps them apart.
        redis.Redis(port=self.port).flushall()


def _rps(output: str) -> float:
    found = re.findall(r"([\d.]+) requests per second", output)
    if not found:
        raise RuntimeError(f"cannot read redis-benchmark output: {output[-300:]!r}")
    return float(found[-1])


def ceiling(server: BenchServer, requests: int = 100_000) -> dict[str, float]:
    """Requests/s Redis itself serves on this machine right now (50 clients, as
    redis-benchmark's default)."""
    tool = shutil.which("redis-benchmark") or shutil.which("valkey-benchmark")
    if tool is None:
        return {}
    sha = redis.Redis(port=server.port).script_load("return 1")
    base = [tool, "-p", str(server.port), "-q", "-n", str(requests)]
    runs = {
        "set": [*base, "-t", "set"],
        "set_pipelined16": [*base, "-t", "set", "-P", "16"],
        "evalsha": [*base, "evalsha", sha, "0"],
        "evalsha_pipelined16": [*base, "-P", "16", "evalsha", sha, "0"],
        "evalsha_1client": [*base[:-1], str(requests // 4), "-c", "1", "evalsha", sha, "0"],
    }
    # The machine's other load moves these a lot (2x between runs minutes apart was seen):
    # the median of three keeps one bad sample from setting every ratio of the run.
    return {name: statistics.median(
                _rps(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
                for _ in range(3))
            for name, cmd in runs.items()}
