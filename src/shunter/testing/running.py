"""A Worker running in the caller's event loop for the length of a block (or, for sync
code, on a loop of its own in a thread): what a test needs to handle the jobs it enqueues,
with the worker's failures raised in the test.

:class:`WorkerRun` owns one ``worker.run()`` task on the running loop. It knows when the
worker has started (checked the server, adopted the queue settings, entered its lifespan:
it claims next), so a worker that cannot start fails the ``await`` that started it rather
than leaving a test to time out. It also collects what the worker logged at ERROR while
it ran (a hook or lifespan that raised, an outcome it could not record): such a line is a
bug the test should not pass over, and :meth:`WorkerRun.stop` raises it as
:class:`WorkerFailure`. Only this worker's lines are collected: its tasks run in a
context that carries its mark, so another worker in the same process is not blamed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import textwrap
import threading
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from ..errors import InvalidInput
from ..worker import Worker

__all__ = ["StartWorker", "WorkerFailure", "WorkerRun", "running_worker", "worker_thread"]

#: What the ``shunter_worker`` fixture gives: ``await start(worker_or_tasks, queues=None,
#: **options) -> Worker``.
StartWorker = Callable[..., Awaitable[Worker]]

#: Set in the context of a worker's run task (inherited by every task it starts).
_RUNNING: contextvars.ContextVar[int | None] = contextvars.ContextVar("shunter_testing_worker",
                                                                      default=None)


class WorkerFailure(AssertionError):
    """The worker logged errors while it ran (``.records``: the log records)."""

    def __init__(self, worker_id: str, records: list[logging.LogRecord]) -> None:
        lines = []
        for record in records:
            line = f"  {record.name}: {record.getMessage()}"
            if record.exc_info and record.exc_info[1] is not None:
                line += "\n" + textwrap.indent(
                    "".join(traceback.format_exception(record.exc_info[1])).rstrip(), "    ")
            lines.append(line)
        super().__init__(f"worker {worker_id} logged {len(records)} error(s) while it ran:\n"
                         + "\n".join(lines))
        self.records = records


class _Collector(logging.Handler):
    """Keeps the ERROR records emitted in the context of one worker's run."""

    def __init__(self, mark: int) -> None:
        super().__init__(logging.ERROR)
        self.mark = mark
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if _RUNNING.get() == self.mark:
            self.records.append(record)


class WorkerRun:
    """One ``worker.run()`` in a task of the running event loop (see the module doc)."""

    def __init__(self, worker: Worker, *, check_errors: bool = True) -> None:
        if not isinstance(worker, Worker):
            raise InvalidInput(f"expected a shunter.Worker, got {type(worker).__name__}")
        self.worker = worker
        self.check_errors = check_errors
        self.task: asyncio.Task[None] | None = None
        self._collector = _Collector(id(self))
        self._lifespan = worker.lifespan
        self._reported = False

    @property
    def done(self) -> bool:
        """The worker's run has ended (stopped, or failed)."""
        return self.task is not None and self.task.done()

    async def start(self, timeout: float = 30.0) -> Worker:
        """Start the worker and return once it claims (or raise why it could not start:
        :class:`~shunter.errors.WorkerStartupError`, a connection error ...)."""
        if self.task is not None:
            raise InvalidInput("this worker was started already")
        started = asyncio.Event()
        user_lifespan = self._lifespan

        @contextlib.asynccontextmanager
        async def lifespan(worker: Worker) -> AsyncIterator[Any]:
            if user_lifespan is None:
                started.set()
                yield None
                return
            async with user_lifespan(worker) as resources:
                started.set()
                yield resources

        # The lifespan is entered after the server check and before the first claim: the
        # moment the worker is up. Put back when the run ends.
        self.worker.lifespan = lifespan
        logging.getLogger("shunter").addHandler(self._collector)
        context = contextvars.copy_context()
        context.run(_RUNNING.set, id(self))
        self.task = asyncio.get_running_loop().create_task(
            self.worker.run(handle_signals=False), name=f"shunter worker {self.worker.id}",
            context=context)
        waiter = asyncio.ensure_future(started.wait())
        try:
            await asyncio.wait({self.task, waiter}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if self.task.done():
            self._reported = True
            self._restore()
            self.task.result()  # raises why it stopped
            raise RuntimeError(f"worker {self.worker.id} stopped before it started")
        if not started.is_set():
            await self.stop(check=False)
            raise TimeoutError(f"worker {self.worker.id} did not start within {timeout}s")
        return self.worker

    async def stop(self, *, check: bool = True) -> None:
        """Stop the worker as SIGTERM would (in-flight jobs get its ``shutdown_timeout``),
        wait for its run to end, and raise what it failed with, then
        :class:`WorkerFailure` for the errors it logged (unless ``check`` is False)."""
        task = self.task
        if task is None:
            return
        try:
            if not task.done():
                await self.worker.close()
            await asyncio.wait({task})
        finally:
            self._restore()
        if self._reported or task.cancelled():
            return
        self._reported = True
        error = task.exception()
        if error is not None:
            raise error
        if check and self.check_errors and self._collector.records:
            raise WorkerFailure(self.worker.id, self._collector.records)

    def _restore(self) -> None:
        self.worker.lifespan = self._lifespan
        logging.getLogger("shunter").removeHandler(self._collector)


@contextlib.asynccontextmanager
async def running_worker(worker: Worker, *, check_errors: bool = True,
                         start_timeout: float = 30.0) -> AsyncIterator[Worker]:
    """Run ``worker`` in the current event loop for the block::

        async with running_worker(Worker("emails", tasks)) as worker:
            job = await queue.add("send", {"to": "ada@example.com"})
            assert await job.wait(timeout=10) == "sent"

    Entering returns once the worker claims (or raises why it could not start). Leaving
    stops it as SIGTERM would and raises what it failed with, then
    :class:`WorkerFailure` if it logged errors (with ``check_errors``, the default), unless
    the block itself raised.
    """
    run = WorkerRun(worker, check_errors=check_errors)
    await run.start(start_timeout)
    try:
        yield worker
    except BaseException:
        with contextlib.suppress(Exception):
            await run.stop(check=False)
        raise
    await run.stop()


@contextlib.contextmanager
def worker_thread(worker: Worker, *, check_errors: bool = True,
                  start_timeout: float = 30.0) -> Iterator[Worker]:
    """:func:`running_worker` for sync code (a Flask or Django test): the worker runs on an
    event loop of its own in a thread, for the block::

        with worker_thread(Worker("thumbnails", tasks)):
            response = client.post("/thumbnails", json={"image": "cat.png"})

    Entering returns once the worker claims (or raises why it could not start); leaving
    stops it and raises its failures, as :func:`running_worker` does.
    """
    ready = threading.Event()
    errors: list[BaseException] = []
    control: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def main() -> None:
        stop = asyncio.Event()
        control.append((asyncio.get_running_loop(), stop))
        run = WorkerRun(worker, check_errors=check_errors)
        try:
            await run.start(start_timeout)
        finally:
            ready.set()
        await stop.wait()
        await run.stop()

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # raised in the caller's thread
            errors.append(exc)
        finally:
            ready.set()

    thread = threading.Thread(target=target, name=f"shunter worker {worker.id}", daemon=True)
    thread.start()
    ready.wait()
    if errors:
        thread.join()
        raise errors[0]

    def stop() -> None:
        loop, event = control[0]
        with contextlib.suppress(RuntimeError):  # the loop has ended already
            loop.call_soon_threadsafe(event.set)
        thread.join()

    try:
        yield worker
    except BaseException:
        stop()
        raise
    stop()
    if errors:
        raise errors[0]
