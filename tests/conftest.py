"""Shared fixtures: a real server (``$SHUNTER_TEST_REDIS_URL``, else an owned embedded
Valkey started for the session), isolation by unique queue names (never by flushing), and
helpers that wait for a condition with a deadline instead of sleeping."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from shunter import Queue, Worker
from shunter.storage import Storage

# pytester runs a user's test file against the plugin (tests/test_testing_helpers.py); the
# plugin's own fixtures serve the framework examples' tests.
pytest_plugins = ["pytester", "shunter.testing.pytest_plugin"]

_OWNED: Path | None = None


def _session_server() -> str:
    """The URL the tests use: ``$SHUNTER_TEST_REDIS_URL``, else an owned embedded server in
    a temporary directory. Its URL is known now; the server itself is started only when a
    selected test is marked ``redis`` (see :func:`pytest_collection_modifyitems`), so
    ``pytest -m "not redis"`` runs the pure tests with no server at all."""
    global _OWNED
    configured = os.environ.get("SHUNTER_TEST_REDIS_URL")
    if configured:
        return configured
    from shunter.embedded import launcher

    _OWNED = Path(tempfile.mkdtemp(prefix="shunter-tests-"))
    atexit.register(shutil.rmtree, _OWNED, True)  # registered first: runs after the stop
    url = f"unix://{launcher.socket_path(_OWNED)}"
    os.environ["SHUNTER_TEST_REDIS_URL"] = url  # subprocesses of tests see the same server
    return url


REDIS_URL = _session_server()
# Code under test that names no server must not start a daemon in the working tree.
os.environ["SHUNTER_REDIS_URL"] = REDIS_URL


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start the owned server (in the main thread, so it dies with pytest even on kill -9,
    and is stopped at exit) when a selected test needs one."""
    if _OWNED is not None and any(item.get_closest_marker("redis") for item in items):
        from shunter import embedded

        started = embedded.start(_OWNED, owned=True).url
        assert started == REDIS_URL, (started, REDIS_URL)


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
def queue_name(request: pytest.FixtureRequest) -> str:
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40].strip("-")
    return f"t-{base}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def client() -> AsyncIterator[redis.asyncio.Redis]:
    c = redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=False)
    yield c
    await c.aclose()


@pytest.fixture
async def queue(queue_name: str) -> AsyncIterator[Queue]:
    q = Queue(queue_name, REDIS_URL)
    yield q
    with contextlib.suppress(Exception):
        await q.obliterate(force=True)
    await q.close()


@pytest.fixture
def storage(queue: Queue) -> Storage:
    return queue.storage


async def eventually(check: Callable[[], Awaitable[Any]] | Callable[[], Any], timeout: float = 10.0,
                     interval: float = 0.01, message: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"{message} not met within {timeout}s (last value: {last!r})")


async def burst(queue: Queue, tasks: dict[str, Any], **options: Any) -> Worker:
    """Run a Worker on ``queue`` in burst mode (until nothing is left) and return it."""
    worker = Worker(queue.name, tasks, REDIS_URL, lease=2, **options)
    await asyncio.wait_for(worker.run(burst=True, handle_signals=False), 30)
    return worker


class RunningWorker:
    """A worker running in a background task of the test's event loop."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.task = asyncio.ensure_future(worker.run(handle_signals=False))

    async def stop(self, timeout: float = 30.0) -> None:
        await self.worker.close()
        await asyncio.wait_for(self.task, timeout)


@pytest.fixture
async def start_worker(queue_name: str) -> AsyncIterator[Callable[..., RunningWorker]]:
    """``start_worker(tasks, **options)`` runs a Worker on the test's queue until the test ends."""
    started: list[RunningWorker] = []

    def start(tasks: dict[str, Any], queue: str | None = None, **options: Any) -> RunningWorker:
        options.setdefault("lease", 2.0)
        running = RunningWorker(Worker(queue or queue_name, tasks, REDIS_URL, **options))
        started.append(running)
        return running

    yield start
    for running in started:
        if not running.task.done():
            with contextlib.suppress(Exception):
                await running.stop()
