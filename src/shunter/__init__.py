"""shunter: reliable, asyncio-native background jobs on Redis or Valkey.

Public surface::

    from shunter import Tasks, Queue, Worker, Job, Backoff, Dedup, UnrecoverableError, RetryAfter
"""

from .errors import (
    BulkAddError,
    DecodeError,
    InvalidInput,
    JobNotFound,
    JobNotInState,
    LeaseLost,
    PayloadTooLarge,
    ProcessCrashed,
    RateLimited,
    RetryAfter,
    ShunterError,
    UnpicklableError,
    UnrecoverableError,
    UnregisteredTask,
    UnsupportedServer,
    WorkerStartupError,
    WrongKeyType,
)
from .events import Event, QueueEvents
from .flow.dedup import Dedup
from .flow.limits import GroupInfo, Rate
from .job import Job, JobError, JobFailed
from .options import Backoff, Retention
from .outcome import Decision, JobTimeout, Task
from .queue import Queue
from .states import State
from .tasks import TaskDef, Tasks
from .worker import Worker
from .worker.child import ProcessJob

__version__ = "0.1.0"

__all__ = [
    "Backoff",
    "BulkAddError",
    "Decision",
    "DecodeError",
    "Dedup",
    "Event",
    "GroupInfo",
    "InvalidInput",
    "Job",
    "JobError",
    "JobFailed",
    "JobNotFound",
    "JobNotInState",
    "JobTimeout",
    "LeaseLost",
    "PayloadTooLarge",
    "ProcessCrashed",
    "ProcessJob",
    "Queue",
    "QueueEvents",
    "Rate",
    "RateLimited",
    "Retention",
    "RetryAfter",
    "ShunterError",
    "State",
    "Task",
    "TaskDef",
    "Tasks",
    "UnpicklableError",
    "UnrecoverableError",
    "UnregisteredTask",
    "UnsupportedServer",
    "Worker",
    "WorkerStartupError",
    "WrongKeyType",
    "__version__",
]
