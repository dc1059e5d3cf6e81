"""The task registry: tasks declared once, by name, and used by producers and workers.

::

    tasks = shunter.Tasks()

    @tasks.task("emails.send", queue="emails", timeout=30, max_attempts=5)
    async def send_email(job: shunter.Job) -> None: ...

    await send_email.add({"to": "a@example.com"})      # producer: a typo fails at import
    await queue.add(send_email, {"to": "a@example.com"})
    worker = shunter.Worker(tasks=tasks)                 # serves every queue of the registry

Names are explicit and stay the rule: a job carries its task's name, never code, so
renaming or moving a function does not strand the jobs already queued. The options given
to :meth:`Tasks.task` are defaults on both sides: the producer stores ``max_attempts``,
``backoff``, ``timeout`` and ``priority`` with each job (an option given to ``add`` wins),
and the worker applies ``timeout``, ``backoff`` (also a callable) and ``classify``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from . import codec
from .errors import InvalidInput
from .flow.dedup import Dedup
from .options import DEFAULT_KEEP_COMPLETED, DEFAULT_KEEP_FAILED, Backoff, Retention
from .outcome import BackoffFn, Classifier, Handler, Task

if TYPE_CHECKING:
    from .job import Job
    from .queue import Queue
    from .storage.connection import RedisLike

__all__ = ["TaskDef", "Tasks", "resolve_handlers"]

R = TypeVar("R")

#: Queue of a task declared without one.
DEFAULT_QUEUE = "default"


class TaskDef(Generic[R]):
    """A registered task: its name, handler and options, and the way to enqueue it.

    Calling it calls the handler (handy in unit tests). :meth:`add` enqueues a job of
    this task on its queue through its registry's connection; ``queue.add(task, data)``
    enqueues it through a :class:`~shunter.Queue` of your own.
    """

    def __init__(self, registry: Tasks, name: str, fn: Callable[[Job], R], *, queue: str,
                 timeout: float | None, max_attempts: int | None,
                 backoff: Backoff | BackoffFn | None, priority: int | None,
                 classify: Classifier | None) -> None:
        self.registry = registry
        self.name = codec.validate_task_name(name)
        self.queue = codec.validate_queue_name(queue)
        self.fn = fn
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.priority = priority
        self.classify = classify
        # Validated by the same rules as every job and worker task, at import time.
        self.handler()
        probe: dict[str, Any] = {}
        if max_attempts is not None:
            probe["max_attempts"] = max_attempts
        if isinstance(backoff, Backoff):
            probe["backoff"] = backoff
        if priority is not None:
            probe["priority"] = priority
        if timeout is not None:
            probe["timeout"] = timeout
        from .producer import validate_job_options  # deferred: producer imports the job model

        validate_job_options(probe)
        self.__name__ = getattr(fn, "__name__", name)
        self.__qualname__ = getattr(fn, "__qualname__", name)
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn

    def __call__(self, job: Job) -> R:
        """Call the handler directly (no queue involved)."""
        return self.fn(job)

    def __repr__(self) -> str:
        return f"<TaskDef {self.name!r} queue={self.queue!r}>"

    def handler(self) -> Task:
        """The worker side: the handler with its timeout, backoff and classifier."""
        return Task(self.fn, timeout=self.timeout, backoff=self.backoff, classify=self.classify)

    def job_options(self) -> dict[str, Any]:
        """The producer side: options stored with each job unless ``add`` gives its own."""
        options: dict[str, Any] = {}
        if self.max_attempts is not None:
            options["max_attempts"] = self.max_attempts
        if isinstance(self.backoff, Backoff):  # a callable backoff stays on the worker
            options["backoff"] = self.backoff
        if self.timeout is not None:
            options["timeout"] = self.timeout
        if self.priority is not None:
            options["priority"] = self.priority
        return options

    async def add(self, data: Any = None, *, job_id: str | None = None,
                  delay: float | None = None, run_at: datetime | None = None,
                  priority: int | None = None, max_attempts: int | None = None,
                  backoff: Backoff | None = None, timeout: float | None = None,
                  keep_completed: Retention | int = DEFAULT_KEEP_COMPLETED,
                  keep_failed: Retention | int = DEFAULT_KEEP_FAILED,
                  group: str | None = None, dedup: Dedup | None = None) -> Job:
        """Enqueue a job of this task on its queue and return it; the options are those of
        :meth:`shunter.Queue.add`, defaulting to the task's. Uses the registry's
        connection (:meth:`Tasks.connect`; by default ``$SHUNTER_REDIS_URL``, else the
        embedded server)."""
        return await self.registry.queue(self.queue).add(
            self, data, job_id=job_id, delay=delay, run_at=run_at, priority=priority,
            max_attempts=max_attempts, backoff=backoff, timeout=timeout,
            keep_completed=keep_completed, keep_failed=keep_failed, group=group, dedup=dedup)


class Tasks:
    """A registry of tasks by name. ``queue`` is the queue of tasks declared without one;
    ``redis`` (a URL or a ``redis.asyncio.Redis``) is where :meth:`TaskDef.add` enqueues,
    by default ``$SHUNTER_REDIS_URL``, else the embedded server."""

    def __init__(self, *, queue: str = DEFAULT_QUEUE, redis: RedisLike = None) -> None:
        self.default_queue = codec.validate_queue_name(queue)
        self._redis = redis
        self._tasks: dict[str, TaskDef[Any]] = {}
        #: Queues opened by TaskDef.add, per event loop (an asyncio client belongs to one).
        self._queues: dict[int, tuple[asyncio.AbstractEventLoop, dict[str, Queue]]] = {}

    def task(self, name: str, *, queue: str | None = None, timeout: float | None = None,
             max_attempts: int | None = None, backoff: Backoff | BackoffFn | None = None,
             priority: int | None = None,
             classify: Classifier | None = None) -> Callable[[Callable[[Job], R]], TaskDef[R]]:
        """Decorator: register the function as the handler of task ``name``.

        - ``queue``: where :meth:`TaskDef.add` puts its jobs and which queues a
          ``Worker(tasks=...)`` serves (default: the registry's);
        - ``timeout`` (seconds per attempt), ``max_attempts``, ``backoff``, ``priority``:
          defaults for every job of the task (``add``'s own options win);
        - ``classify``: ``(exc, job) -> Decision | RetryAfter | None`` for this task.

        A name registered twice raises :class:`~shunter.errors.InvalidInput`.
        """
        def register(fn: Callable[[Job], R]) -> TaskDef[R]:
            return self.register(name, fn, queue=queue, timeout=timeout,
                                 max_attempts=max_attempts, backoff=backoff, priority=priority,
                                 classify=classify)
        return register

    def register(self, name: str, fn: Callable[[Job], R], *, queue: str | None = None,
                 timeout: float | None = None, max_attempts: int | None = None,
                 backoff: Backoff | BackoffFn | None = None, priority: int | None = None,
                 classify: Classifier | None = None) -> TaskDef[R]:
        """Register ``fn`` as task ``name`` (the function form of :meth:`task`)."""
        if isinstance(name, str) and name in self._tasks:
            raise InvalidInput(f"task {name!r} is registered already (to {self._tasks[name].fn!r})")
        if isinstance(fn, TaskDef):
            raise InvalidInput(f"task {name!r}: {fn!r} is registered already; register the "
                               "function once")
        defined = TaskDef(self, name, fn, queue=queue or self.default_queue, timeout=timeout,
                          max_attempts=max_attempts, backoff=backoff, priority=priority,
                          classify=classify)
        self._tasks[defined.name] = defined
        return defined

    def include(self, other: Tasks) -> None:
        """Add every task of another registry (e.g. one per module of your app)."""
        for name, defined in other._tasks.items():
            if name in self._tasks and self._tasks[name] is not defined:
                raise InvalidInput(f"task {name!r} is registered in both registries")
            self._tasks[name] = defined

    def __getitem__(self, name: str) -> TaskDef[Any]:
        try:
            return self._tasks[name]
        except KeyError:
            raise KeyError(f"no task named {name!r} is registered") from None

    def get(self, name: str) -> TaskDef[Any] | None:
        return self._tasks.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self) -> Iterator[TaskDef[Any]]:
        return iter(list(self._tasks.values()))

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def names(self) -> list[str]:
        """Task names, in registration order."""
        return list(self._tasks)

    @property
    def queues(self) -> list[str]:
        """The queues of the registered tasks, in the order they first appear."""
        return list(dict.fromkeys(t.queue for t in self._tasks.values()))

    def handlers(self) -> dict[str, Handler | Task]:
        """Task name -> worker-side :class:`~shunter.Task`, for a :class:`~shunter.Worker`."""
        return {name: t.handler() for name, t in self._tasks.items()}

    # -- the producer connection -----------------------------------------------------------
    def connect(self, redis: RedisLike) -> None:
        """Set where :meth:`TaskDef.add` enqueues (a URL or a ``redis.asyncio.Redis``);
        queues opened before on another connection are dropped (call :meth:`close` first
        to close them)."""
        self._redis = redis
        self._queues.clear()

    def queue(self, name: str) -> Queue:
        """The :class:`~shunter.Queue` that :meth:`TaskDef.add` uses for ``name`` on the
        running event loop (opened on first use)."""
        from .queue import Queue  # deferred: the queue module imports the producer

        loop = asyncio.get_running_loop()
        for key, (other, _) in list(self._queues.items()):
            if other.is_closed():
                del self._queues[key]
        _, queues = self._queues.setdefault(id(loop), (loop, {}))
        if name not in queues:
            queues[name] = Queue(name, self._redis)
        return queues[name]

    async def close(self) -> None:
        """Close the queues :meth:`TaskDef.add` opened on the running event loop."""
        entry = self._queues.pop(id(asyncio.get_running_loop()), None)
        for queue in (entry[1].values() if entry else ()):
            await queue.close()


def resolve_handlers(tasks: object) -> dict[str, Task]:
    """Task name -> :class:`~shunter.Task`, from a :class:`Tasks` registry or a mapping of
    name -> callable, ``Task`` or ``TaskDef`` (what a :class:`~shunter.Worker` takes)."""
    if isinstance(tasks, Tasks):
        tasks = tasks.handlers()
    if not isinstance(tasks, Mapping) or not tasks:
        raise InvalidInput("tasks must be a shunter.Tasks registry or a non-empty mapping of "
                           "task name -> handler")
    resolved: dict[str, Task] = {}
    for name, handler in tasks.items():
        codec.validate_task_name(name)
        if isinstance(handler, TaskDef):
            handler = handler.handler()
        resolved[name] = handler if isinstance(handler, Task) else Task(handler)
    return resolved
