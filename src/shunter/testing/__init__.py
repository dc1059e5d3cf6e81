"""Helpers to test code that enqueues or handles shunter jobs, against a real server (by
default ``$SHUNTER_REDIS_URL``, else the embedded one), never a mock::

    from shunter.testing import assert_enqueued, run_until_idle

    async def test_signup_sends_a_welcome_email(queue):
        await signup(queue, "ada@example.com")                  # the code under test
        job = await assert_enqueued(queue, send_email, {"to": "ada@example.com"})
        report = await run_until_idle(queue, tasks)
        assert report.completed == 1
        assert (await job.refresh()).result == "sent"

- :func:`run_until_idle`: run the queues' jobs with a real worker until nothing is
  waiting or active (optionally running scheduled jobs and retries now); returns an
  :class:`IdleReport`.
- :func:`assert_enqueued`, :func:`assert_not_enqueued`, :func:`enqueued_jobs` (and their
  ``_sync`` twins for :class:`shunter.sync.Queue`): find jobs by task and data.
- :func:`running_worker`: a worker running in the test's event loop for a block;
  :func:`worker_thread`: the same for sync tests, on a loop of its own in a thread.
- :func:`unique_queue_name`, :func:`obliterate_queue`: a queue of the test's own.
- pytest fixtures built on them: ``pytest_plugins = ["shunter.testing.pytest_plugin"]``.

Nothing here is needed at run time: the rest of shunter never imports this package.
"""

from .asserts import (
    ANY,
    assert_enqueued,
    assert_enqueued_sync,
    assert_not_enqueued,
    assert_not_enqueued_sync,
    enqueued_jobs,
    enqueued_jobs_sync,
)
from .idle import IdleReport, run_until_idle
from .queues import obliterate_queue, obliterate_queue_blocking, unique_queue_name
from .running import StartWorker, WorkerFailure, WorkerRun, running_worker, worker_thread

__all__ = [
    "ANY",
    "IdleReport",
    "StartWorker",
    "WorkerFailure",
    "WorkerRun",
    "assert_enqueued",
    "assert_enqueued_sync",
    "assert_not_enqueued",
    "assert_not_enqueued_sync",
    "enqueued_jobs",
    "enqueued_jobs_sync",
    "obliterate_queue",
    "obliterate_queue_blocking",
    "run_until_idle",
    "running_worker",
    "unique_queue_name",
    "worker_thread",
]
