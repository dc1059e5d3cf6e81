"""pytest fixtures for code that enqueues or handles shunter jobs. Enable them in your top
``conftest.py``::

    pytest_plugins = ["shunter.testing.pytest_plugin"]

It is not registered as a ``pytest11`` entry point on purpose: an installed shunter then
stays out of every pytest run that did not ask for it (no import of shunter before
coverage starts, no fixture names pushed into other projects' suites).

The async fixtures need pytest-asyncio (any mode; in strict mode mark the tests
``@pytest.mark.asyncio``).

- ``shunter_redis_url`` (session): the server, ``$SHUNTER_REDIS_URL`` else the embedded
  server of ``$SHUNTER_DATA_DIR`` (started if needed). Override it to choose another.
- ``shunter_queue_name``: a queue name of the test's own; the queue is obliterated after
  the test (its jobs, events and keys).
- ``shunter_queue``: a :class:`shunter.Queue` on that name; ``shunter_sync_queue``: a
  :class:`shunter.sync.Queue` on it.
- ``shunter_worker``: start workers in the test's event loop, stopped when the test ends::

      async def test_report(shunter_queue, shunter_worker):
          await shunter_worker(tasks)                  # on the test's queue
          job = await shunter_queue.add("report", {"month": 5})
          assert await job.wait(timeout=10) == {"rows": 31}

  ``await shunter_worker(tasks, queues=None, **worker_options)`` builds a
  :class:`shunter.Worker` on the test's queue (or ``queues``) and the fixture's server;
  ``await shunter_worker(worker, **changes)`` runs a Worker of yours
  (``worker.replace(**changes)`` when changes are given). It returns once the worker
  claims, and raises why it could not start. At teardown each worker stops as on
  SIGTERM, and the test errors with what it failed with, or
  :class:`~shunter.testing.WorkerFailure` for the errors it logged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

try:
    import pytest_asyncio
except ImportError as exc:  # pragma: no cover - depends on the user's environment
    raise ImportError("shunter.testing.pytest_plugin needs pytest-asyncio "
                      "(pip install 'shunter[testing]')") from exc

from ..queue import Queue
from ..storage.connection import resolve_url
from ..sync import Queue as SyncQueue
from ..worker import Worker
from .queues import obliterate_queue_blocking, unique_queue_name
from .running import StartWorker, WorkerRun

__all__ = ["StartWorker", "shunter_queue", "shunter_queue_name", "shunter_redis_url",
           "shunter_sync_queue", "shunter_worker"]


@pytest.fixture(scope="session")
def shunter_redis_url() -> str:
    """The server the fixtures use: ``$SHUNTER_REDIS_URL``, else the embedded server."""
    return resolve_url()


@pytest.fixture
def shunter_queue_name(request: pytest.FixtureRequest, shunter_redis_url: str) -> Iterator[str]:
    """A queue name of this test's own; the queue is obliterated after the test."""
    name = unique_queue_name(request.node.name)
    yield name
    obliterate_queue_blocking(name, shunter_redis_url)


@pytest_asyncio.fixture
async def shunter_queue(shunter_queue_name: str, shunter_redis_url: str) -> AsyncIterator[Queue]:
    """A :class:`shunter.Queue` of this test's own (obliterated after the test)."""
    async with Queue(shunter_queue_name, shunter_redis_url) as queue:
        yield queue


@pytest.fixture
def shunter_sync_queue(shunter_queue_name: str, shunter_redis_url: str) -> Iterator[SyncQueue]:
    """A :class:`shunter.sync.Queue` of this test's own (obliterated after the test)."""
    with SyncQueue(shunter_queue_name, shunter_redis_url) as queue:
        yield queue


@pytest_asyncio.fixture
async def shunter_worker(shunter_queue_name: str,
                         shunter_redis_url: str) -> AsyncIterator[StartWorker]:
    """Start workers in the test's event loop; each is stopped when the test ends, and
    what it failed with (or the errors it logged) fails the test."""
    runs: list[WorkerRun] = []

    async def start(worker_or_tasks: Any, queues: Any = None, **options: Any) -> Worker:
        if isinstance(worker_or_tasks, Worker):
            if queues is not None:
                options["queues"] = queues
            worker = worker_or_tasks.replace(**options) if options else worker_or_tasks
        else:
            options.setdefault("redis", shunter_redis_url)
            worker = Worker(queues if queues is not None else shunter_queue_name,
                            worker_or_tasks, **options)
        run = WorkerRun(worker)
        runs.append(run)
        return await run.start()

    yield start
    failures: list[BaseException] = []
    for run in reversed(runs):
        try:
            await run.stop()
        except Exception as exc:
            failures.append(exc)
    if failures:
        raise failures[0]
