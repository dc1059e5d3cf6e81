"""What runs inside a child process of the worker's process pool (:mod:`.processes`):
the loop that runs the jobs the worker sends, one at a time, and the job a handler there
receives (:class:`ProcessJob`). This module imports nothing of the worker's side.

A reader thread takes the worker's messages while the main thread runs handlers, so a
stop request makes ``job.cancelled`` True mid-handler; when the worker closes the socket
(shutdown) or dies, the child exits at once, even in the middle of a handler.
"""

from __future__ import annotations

import importlib
import os
import pickle
import queue
import signal
import socket
import threading
import traceback
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .. import codec
from ..errors import InvalidInput, UnpicklableError, UnrecoverableError
from ..options import Backoff
from ..outcome import HandlerExit
from ..states import State

if TYPE_CHECKING:
    from ..job import Job

__all__ = ["Message", "ProcessJob", "child_main", "pack_error", "unpack_error"]

Message = tuple[Any, ...]


def pack_error(exc: BaseException) -> tuple[bytes | None, str]:
    """An exception to send to the other process: its pickle (None if it has none) and a
    text that stands in for it if the pickle does not come back."""
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    try:
        text = f"{name}: {exc}"
    except Exception:
        text = f"{name}: <unprintable>"
    try:
        return pickle.dumps(exc, pickle.HIGHEST_PROTOCOL), text
    except Exception as why:
        return None, f"{text} (it does not pickle: {why})"


def unpack_error(raw: bytes | None, text: str) -> BaseException:
    if raw is not None:
        try:
            exc = pickle.loads(raw)
        except Exception as why:
            text = f"{text} (it does not unpickle: {why})"
        else:
            if isinstance(exc, BaseException):
                return exc
    return UnpicklableError(f"{text}; the exception could not cross between the worker and "
                            "the handler's process")


class _Link:
    """The child's end of its socket. A reader thread takes the worker's messages while the
    main thread runs handlers; when the worker closes the socket (shutdown) or dies, the
    child exits at once, even in the middle of a handler."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()  # one message at a time: handlers may report from threads
        self.jobs: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self._acks: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self.stop = False
        threading.Thread(target=self._read, name="shunter-link", daemon=True).start()

    def _read(self) -> None:
        stream = self._sock.makefile("rb")
        try:
            while len(header := stream.read(8)) == 8:
                message = pickle.loads(stream.read(int.from_bytes(header, "big")))
                if message[0] == "run":
                    self.stop = False  # a stop sent as the previous job ended is stale now
                    self.jobs.put(message[1:])
                elif message[0] == "stop":
                    self.stop = True
                else:
                    self._acks.put(message[1:])
        finally:
            os._exit(0)

    def send(self, message: Message) -> None:
        with self._lock:
            self._send(message)

    def request(self, message: Message) -> None:
        """Send a progress or log write and wait for the worker's answer; raise its error."""
        with self._lock:
            self._send(message)
            raw, text = self._acks.get()
        if raw is not None or text:
            raise unpack_error(raw, text)

    def _send(self, message: Message) -> None:
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        try:
            self._sock.sendall(len(data).to_bytes(8, "big"))
            self._sock.sendall(data)
        except OSError:  # the worker is gone
            os._exit(0)


class ProcessJob:
    """The job as a handler in the process pool sees it: a snapshot of its fields taken when
    the attempt began, :attr:`cancelled`, and :meth:`update_progress_sync` and
    :meth:`log_sync`, which the worker writes through the real job (fenced) before they
    return; their errors (:class:`~shunter.errors.LeaseLost`, ``PayloadTooLarge`` ...) are
    raised here."""

    id: str
    queue: str
    task: str
    data: Any
    state: State | None
    token: int | None
    priority: int
    attempts_made: int
    max_attempts: int
    stalls: int
    deferrals: int
    throttled: int
    group: str | None
    timeout: float | None
    backoff: Backoff | None
    created_at: datetime | None
    scheduled_for: datetime | None
    started_at: datetime | None
    progress: Any
    cancel_requested: bool
    worker: str | None

    def __init__(self, fields: dict[str, Any], link: _Link) -> None:
        self.__dict__.update(fields)
        self._link = link
        self._stop_seen = False

    @classmethod
    def snapshot(cls, job: Job) -> dict[str, Any]:
        """The fields of ``job`` that travel to the child."""
        return {name: getattr(job, name) for name in cls.__annotations__}

    def __repr__(self) -> str:
        return f"<ProcessJob {self.queue}/{self.id} {self.task}>"

    @property
    def attempt(self) -> int:
        """The number of the running attempt (1-based)."""
        return self.attempts_made + 1

    @property
    def cancelled(self) -> bool:
        """True once the worker asked this attempt to stop (cancel, lost lease, shutdown);
        poll it in long loops and return. At its timeout the process is ended instead."""
        if not self._link.stop:
            return False
        self._stop_seen = True
        return True

    def update_progress_sync(self, progress: Any) -> None:
        """Store ``progress`` (any JSON) as the job's progress, as ``Job.update_progress``."""
        self._link.request(("progress", codec.dumps(progress, "progress")))
        self.progress = progress

    def log_sync(self, line: str) -> None:
        """Append one line to the job's log, as ``Job.log``."""
        self._link.request(("log", str(line)))


def child_main(sock: socket.socket) -> None:
    """A child process: run the jobs the worker sends, one at a time, until it closes the socket."""
    # Ctrl-C in a terminal signals the whole process group; stopping the children is the
    # worker's call (it tells them, or ends them), not theirs.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    link = _Link(sock)
    while True:
        module, qualname, fields = link.jobs.get()
        link.send(_run(link, module, qualname, fields))


def _run(link: _Link, module: str, qualname: str, fields: dict[str, Any]) -> Message:
    job = ProcessJob(fields, link)
    try:
        handler: Any = importlib.import_module(module)
        for part in qualname.split("."):
            handler = getattr(handler, part)
        link.send(("started",))
        value = handler(job)
    except Exception as exc:
        tb = exc.__traceback__
        text = "".join(traceback.format_exception(type(exc), exc, tb.tb_next if tb else None))
        return _failed(job, exc, text)
    except BaseException as exc:  # SystemExit, KeyboardInterrupt ...: an error, as in a thread
        return _failed(job, HandlerExit(f"handler raised {type(exc).__name__}({exc})"), "")
    try:
        return ("done", job._stop_seen, codec.dumps(value, "result"), None, "", "")
    except InvalidInput as bad:  # the same result would come again: fail, do not retry
        return _failed(job, UnrecoverableError(str(bad)), "")


def _failed(job: ProcessJob, exc: BaseException, tb: str) -> Message:
    raw, text = pack_error(exc)
    return ("done", job._stop_seen, None, raw, text, tb)
