"""The process pool of ``Task(fn, executor="process")``: CPU-bound sync handlers run in
spawned child processes, one job at a time per process. The worker's event loop owns the
worker's side, with no threads: one reader task per child and one task per attempt.

Why not ``concurrent.futures.ProcessPoolExecutor``: it cannot stop one job, and a process
of it that dies marks the whole executor broken, failing every job in it. Here each child
stands alone: a timeout, an interrupt the handler ignores, or a crash ends its own process
and attempt only, and the next job that needs a process gets a new one.

Children start lazily: the first process job starts one, more start while all are busy,
up to ``size``; idle ones wait for the next job. They are spawned, not forked (a fork of a
process with an event loop, threads and open connections is not safe), so the child finds
the handler by module and qualified name (checked by :class:`~shunter.outcome.Task`).

The conversation over a socket pair (pickled tuples, each behind an 8-byte length)::

    worker -> child   ("run", module, qualname, fields)    fields: a snapshot of the job
                      ("stop",)                             job.cancelled becomes True
                      ("ack", error, text)                  a progress or log write ended
    child -> worker   ("started",)                          imported; its timeout runs from now
                      ("progress", json) / ("log", line)    written through the real Job
                      ("done", stop_seen, json, error, text, traceback)

An attempt ends when its child reports ``done``; at its timeout (the child is ended:
SIGTERM, then SIGKILL after :data:`TERM_GRACE`; ``JobTimeout``); when the child dies
(``ProcessCrashed``, naming the exit code or signal); or when the worker interrupts it
(cancel, lost lease, shutdown): the child is told to stop and ended after ``grace``. A
child exits as soon as its socket closes: at shutdown, or when the worker itself dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import pickle
import signal
import socket
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

from .. import codec
from ..errors import InvalidInput, ProcessCrashed, ShunterError
from ..job import Job
from ..outcome import TRACEBACK_TEXT, JobTimeout
from .child import Message, ProcessJob, child_main, pack_error, unpack_error

__all__ = ["KILL_TIME", "TERM_GRACE", "ProcessPool"]

#: Seconds an ended child has between SIGTERM and SIGKILL.
TERM_GRACE = 0.5
#: Seconds we wait for a killed child to be reaped.
KILL_WAIT = 2.0
#: The most an attempt takes past its timeout or grace to end its child.
KILL_TIME = TERM_GRACE + KILL_WAIT
#: Seconds a child has, once given a job, to start its handler: a new child imports shunter
#: and the handler's module first. The attempt's timeout runs from the start, so a module
#: that is slow to import (numpy, torch ...) does not time out every job of a new child.
STARTUP = 60.0
#: While a job waits for a free process, its lease is extended every this many seconds.
KEEP_EVERY = 10.0

_STOP: Message = ("stop",)
_DIED: Message = ("died",)


class _Child:
    """The worker's side of one child: its socket, and a reader task that puts the child's
    messages into the inbox of the attempt it runs (there is none while it is idle)."""

    def __init__(self, process: BaseProcess, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.process = process
        self.pid = process.pid
        self.inbox: asyncio.Queue[Message] | None = None
        self.alive = True
        self._writer = writer
        self._reading = asyncio.get_running_loop().create_task(self._read(reader))

    def send(self, message: Message) -> None:
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        self._writer.write(len(data).to_bytes(8, "big"))
        self._writer.write(data)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        note = _DIED
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(8), "big")
                message = pickle.loads(await reader.readexactly(size))
                if self.inbox is not None:
                    self.inbox.put_nowait(message)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception as exc:  # not our protocol: the child cannot be trusted to go on
            note = ("broken", f"sent a message that could not be read ({exc!r})")
        self.alive = False
        if self.inbox is not None:
            self.inbox.put_nowait(note)

    async def end(self, terminate: bool) -> int | None:
        """Close the socket (an idle child exits), terminate the process if asked, kill it if
        it is still there after a grace, and reap it. Its exit code (-N: signal N)."""
        self.alive = False
        self._writer.close()
        if terminate:
            self.process.terminate()
        await asyncio.to_thread(self.process.join, TERM_GRACE if terminate else KILL_WAIT)
        if self.process.exitcode is None:
            self.process.kill()
            await asyncio.to_thread(self.process.join, KILL_WAIT)
        self._reading.cancel()
        return self.process.exitcode


@dataclass(slots=True)
class _Attempt:
    job: Job
    module: str
    qualname: str
    timeout: float
    began: Callable[[float], None]
    inbox: asyncio.Queue[Message]


def _death(pid: int | None, code: int | None) -> str:
    if code is None:
        return f"(pid {pid}) stopped answering and could not be reaped"
    if code >= 0:
        return f"(pid {pid}) exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = "?"
    hint = " (the kernel's OOM killer sends it when memory runs out)" if -code == signal.SIGKILL else ""
    return f"(pid {pid}) was killed by signal {-code}, {name}{hint}"


class ProcessPool:
    """Up to ``size`` child processes (``None``: one per CPU) for the jobs of
    ``executor="process"`` tasks, started as jobs need them. ``grace``: how long an
    interrupted handler has to stop before its process is ended (the worker's
    ``cancel_grace``)."""

    def __init__(self, size: int | None, grace: float) -> None:
        size = (os.cpu_count() or 1) if size is None else size
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 1024:
            raise InvalidInput(f"processes must be an int from 1 to 1,024 (None: one per CPU), got {size!r}")
        self.size = size
        self.grace = grace
        #: Processes started so far, and those that died or were ended during an attempt.
        self.started = 0
        self.lost = 0
        self._children: set[_Child] = set()
        self._talks: set[asyncio.Task[Any]] = set()
        # Places for running attempts: an idle child, or None (room to start one). Last in,
        # first out: a warm child is reused before a new one starts.
        self._free: asyncio.LifoQueue[_Child | None] = asyncio.LifoQueue()
        for _ in range(size):
            self._free.put_nowait(None)
        self._closed = False
        self._context = multiprocessing.get_context("spawn")

    @property
    def pids(self) -> list[int]:
        """The pids of the children alive now."""
        return [child.pid for child in self._children if child.alive and child.pid is not None]

    async def run(self, fn: Callable[..., Any], job: Job, timeout: float,
                  began: Callable[[float], None]) -> Any:
        """Run ``fn(job)`` in a child: its result (as JSON that ``decide`` stores as is), or
        its exception (with the child's traceback), ``JobTimeout`` (the child was ended) or
        ``ProcessCrashed``. ``began(seconds)`` says how much longer the attempt may hold its
        lease: called while the job waits for a free process, when a child takes it, and
        when the handler starts (its timeout runs from then). Cancelling interrupts the
        attempt: a job still waiting never starts; a running one is told to stop
        (``job.cancelled``) and its child is ended after ``grace``."""
        place = await self._take(began)
        attempt = _Attempt(job, fn.__module__, fn.__qualname__, timeout, began, asyncio.Queue())
        # The conversation is never cancelled: it must answer the child and reap it.
        talk = asyncio.get_running_loop().create_task(self._talk(place, attempt))
        self._talks.add(talk)
        talk.add_done_callback(self._talks.discard)
        try:
            return await asyncio.shield(talk)
        except asyncio.CancelledError:
            if not talk.done():
                attempt.inbox.put_nowait(_STOP)
            return await talk

    async def _take(self, began: Callable[[float], None]) -> _Child | None:
        """A place for one attempt: an idle child, or None (room to start one). A job that
        waits for one keeps its lease meanwhile."""
        while True:
            if self._closed:
                raise ShunterError("the worker's process pool is shut down")
            with contextlib.suppress(asyncio.QueueEmpty):
                return self._free.get_nowait()
            began(KEEP_EVERY + KILL_TIME)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(KEEP_EVERY):
                    return await self._free.get()

    async def _talk(self, place: _Child | None, attempt: _Attempt) -> Any:
        child = place
        try:
            if child is not None and not child.alive:  # it died while idle
                await self._end(child, terminate=True)
                child = None
            if child is None:
                child = await self._start()
            child.inbox = attempt.inbox
            if not attempt.inbox.empty():  # interrupted while its process started: never run
                raise asyncio.CancelledError()
            fields = ProcessJob.snapshot(attempt.job)
            child.send(("run", attempt.module, attempt.qualname, fields))
            attempt.began(STARTUP + KILL_TIME)
            return await self._converse(child, attempt)
        finally:
            if child is not None:
                child.inbox = None
                if not child.alive and child in self._children:  # died after it answered
                    await self._end(child, terminate=True)
            self._free.put_nowait(child if child is not None and child.alive else None)

    async def _converse(self, child: _Child, attempt: _Attempt) -> Any:
        """Serve the child until the attempt ends: answer its writes, pass on a stop, keep
        the deadline (:data:`STARTUP` until the handler starts, then its timeout)."""
        loop = asyncio.get_running_loop()
        job, inbox = attempt.job, attempt.inbox
        deadline = loop.time() + STARTUP
        started = stopping = False
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await inbox.get()
            except TimeoutError:
                self.lost += 1
                await self._end(child, terminate=True)
                raise _overdue(attempt, child.pid, started, stopping) from None
            kind = message[0]
            if kind == "done":
                return _ending(job, message)
            if kind in ("progress", "log"):
                child.send(("ack", *await _write(job, message)))
            elif kind == "started" and not stopping:
                started = True
                deadline = loop.time() + attempt.timeout
                attempt.began(attempt.timeout + KILL_TIME)
            elif kind == "stop":
                stopping = True
                child.send(_STOP)
                deadline = loop.time() + self.grace
            elif kind in ("died", "broken"):
                self.lost += 1
                code = await self._end(child, terminate=kind == "broken")
                detail = f": it {message[1]}" if kind == "broken" else ""
                raise _framed(ProcessCrashed(f"the process running attempt {job.attempt} "
                                             f"{_death(child.pid, code)}{detail}"))

    async def _start(self) -> _Child:
        if self._closed:
            raise ShunterError("the worker's process pool is shut down")
        ours, theirs = socket.socketpair()
        self.started += 1
        process = self._context.Process(target=child_main, args=(theirs,), daemon=True,
                                        name=f"shunter-process-{self.started}")
        try:
            process.start()  # a few milliseconds: the child's imports happen on its own time
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        reader, writer = await asyncio.open_connection(sock=ours)
        child = _Child(process, reader, writer)
        self._children.add(child)
        return child

    async def _end(self, child: _Child, terminate: bool) -> int | None:
        code = await child.end(terminate)
        self._children.discard(child)
        return code

    async def shutdown(self) -> None:
        """End every child and reap it: idle ones exit when their socket closes; one still
        running a handler (it outlived the worker's shutdown) is terminated."""
        self._closed = True
        await asyncio.gather(*(self._end(child, terminate=child.inbox is not None)
                               for child in list(self._children)))


def _overdue(attempt: _Attempt, pid: int | None, started: bool, stopping: bool) -> BaseException:
    """How an attempt whose process was ended at its deadline ends."""
    if stopping:  # told to stop, it ran past its grace
        return asyncio.CancelledError()
    if not started:
        return _framed(JobTimeout(
            f"attempt {attempt.job.attempt}: its process (pid {pid}) did not start the handler "
            f"within {STARTUP:g}s (importing {attempt.module}?); it was ended"))
    return _framed(JobTimeout(f"attempt {attempt.job.attempt} exceeded its timeout of "
                              f"{attempt.timeout:g}s; its process (pid {pid}) was ended"))


def _ending(job: Job, message: Message) -> Any:
    """The end of an attempt as the child reported it: a result, or an exception to raise."""
    _, stop_seen, result, raw, text, tb = message
    if stop_seen:  # what it returns after seeing job.cancelled is unfinished work
        job._stop_seen = True
    if result is not None:
        return codec.encoded(result)
    raise _framed(unpack_error(raw, text), tb)


def _framed(exc: BaseException, tb: str = "") -> BaseException:
    """``exc`` to be stored with the traceback ``tb`` from the child, or none: the frames of
    the pool that raises it here say nothing (an exception with ``__slots__`` keeps them)."""
    with contextlib.suppress(AttributeError):
        setattr(exc, TRACEBACK_TEXT, tb or "".join(traceback.format_exception_only(exc)))
    return exc


async def _write(job: Job, message: Message) -> tuple[bytes | None, str]:
    """Write a child's progress or log line through the real job; the answer to send back."""
    try:
        if message[0] == "progress":
            await job.update_progress(codec.loads(message[1], "progress"))
        else:
            await job.log(message[1])
    except Exception as exc:
        return pack_error(exc)
    return None, ""
