"""Deciding what happens to a job after its handler ran, apart from storing it.

:func:`decide` is pure: given the job, its task and how the handler ended, it returns an
:class:`Outcome`; the executor then applies it with one fenced storage call.
"""

from __future__ import annotations

import inspect
import sys
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

from . import codec
from .errors import InvalidInput, RateLimited, RetryAfter, UnrecoverableError
from .job import Job
from .options import Backoff

__all__ = ["Classifier", "Decision", "Executor", "HandlerExit", "Outcome", "Task", "decide", "error_json"]

#: Caps on stored error text (characters).
MAX_ERROR_MESSAGE = 4096
MAX_TRACEBACK = 16384
#: An exception may carry the traceback text to store in this attribute: the process pool
#: sets it, since a handler's frames are in its process and the pool's own say nothing.
TRACEBACK_TEXT = "shunter_traceback"


class Decision(Enum):
    """What an error classifier may answer (or a :class:`RetryAfter`, or None for the default)."""

    #: Count the attempt and retry with backoff while attempts remain.
    RETRY = "retry"
    #: Fail the job now (dead-letter), whatever attempts remain.
    FAIL = "fail"


#: ``classify(exc, job)`` maps a handler's exception to a decision; None = default rule.
Classifier = Callable[[BaseException, Job], "Decision | RetryAfter | None"]
#: A backoff computed in code: ``(attempt, exc) -> seconds``.
BackoffFn = Callable[[int, BaseException], float]
Handler = Callable[[Job], Any] | Callable[[Job], Awaitable[Any]]
#: Where a handler runs: "auto" (async on the loop, sync in a thread), "thread", "process".
Executor = Literal["auto", "thread", "process"]


@dataclass(slots=True)
class Task:
    """A handler with per-task options. Plain callables given to a Worker are wrapped in
    one with the defaults. ``timeout`` and ``backoff`` apply when the job has none of its
    own; ``classify`` is tried before the worker's classifier. ``executor="process"`` runs
    a sync, module-level function in the worker's process pool (CPU-bound work)."""

    fn: Handler
    timeout: float | None = None
    backoff: Backoff | BackoffFn | None = None
    classify: Classifier | None = None
    executor: Executor = "auto"
    is_async: bool = field(init=False)

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise InvalidInput(f"task handler must be callable, got {self.fn!r}")
        if self.timeout is not None and (
            isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float))
            or not 0 < self.timeout <= 7 * 86400
        ):
            raise InvalidInput(f"Task timeout must be seconds in (0, 7 days], got {self.timeout!r}")
        if self.backoff is not None and not (isinstance(self.backoff, Backoff) or callable(self.backoff)):
            raise InvalidInput(f"Task backoff must be a Backoff or a callable, got {self.backoff!r}")
        if self.classify is not None and not callable(self.classify):
            raise InvalidInput(f"Task classify must be callable, got {self.classify!r}")
        call = getattr(self.fn, "__call__", None)  # noqa: B004 - async callable objects
        self.is_async = inspect.iscoroutinefunction(self.fn) or inspect.iscoroutinefunction(call)
        if self.executor not in ("auto", "thread", "process"):
            raise InvalidInput(f"Task executor must be 'auto', 'thread' or 'process', got {self.executor!r}")
        if self.is_async and self.executor != "auto":
            raise InvalidInput(f"{self.fn!r} is async: it runs on the event loop; executor="
                               f"{self.executor!r} is for sync functions")
        if self.executor == "process":
            _check_importable(self.fn)


def _check_importable(fn: Any) -> None:
    """A child process finds the handler by module and qualified name (it is never pickled
    by value): only a function that this name leads back to can run there."""
    if not inspect.isfunction(fn):
        raise InvalidInput(f"executor='process' needs a function defined at module level, got {fn!r}")
    module, name = fn.__module__, fn.__qualname__
    if "<lambda>" in name or "<locals>" in name:
        raise InvalidInput(f"executor='process' cannot run {module}.{name}: a child process imports "
                           "its handler by name, so it must be defined at module level (no lambda, "
                           "closure or nested function)")
    found: Any = sys.modules.get(module)
    if module == "__main__" and not getattr(found, "__file__", None):
        raise InvalidInput(f"executor='process' cannot run {name}: it was defined in an interactive "
                           "session, which a child process cannot import; put it in a module")
    for part in name.split("."):
        found = getattr(found, part, None)
    if found is not fn:
        raise InvalidInput(f"executor='process' cannot run {module}.{name}: that name does not lead "
                           "back to this function (was the name bound to something else later?)")


class HandlerExit(Exception):
    """A handler raised SystemExit or KeyboardInterrupt; the worker treats it as an error."""


class JobTimeout(Exception):
    """The attempt ran longer than its timeout (a retryable failure)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: Literal["complete", "retry", "fail", "throttle"]
    result: bytes = b"null"
    delay_ms: int = 0
    error: bytes = b""
    count_attempt: bool = True
    scope: str = "group"  #: what a throttle parks: "group" or "queue"


def _safe_str(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # an exception whose __str__ raises must not take the worker down
        text = f"<unprintable {type(exc).__name__}>"
    return text if len(text) <= MAX_ERROR_MESSAGE else text[: MAX_ERROR_MESSAGE - 14] + " …[truncated]"


def error_json(exc: BaseException, type_name: str | None = None) -> bytes:
    """The stored form of an error: type, message and the tail of the traceback."""
    tb = getattr(exc, TRACEBACK_TEXT, None)
    if not isinstance(tb, str):
        try:
            tb = "".join(traceback.format_exception(exc))
        except Exception:
            tb = ""
    if len(tb) > MAX_TRACEBACK:
        tb = "…[truncated]\n" + tb[-MAX_TRACEBACK:]
    name = type_name or type(exc).__qualname__
    return codec.dumps({"type": name, "message": _safe_str(exc), "traceback": tb})


def _retry_delay(job: Job, task: Task | None, exc: BaseException, default: Backoff) -> float:
    backoff = job.backoff or (task.backoff if task else None) or default
    if isinstance(backoff, Backoff):
        return backoff.delay(job.attempt)
    try:
        seconds = float(backoff(job.attempt, exc))
    except Exception:
        return default.delay(job.attempt)
    return min(max(seconds, 0.0), 366 * 86400.0)


def decide(job: Job, task: Task | None, exc: BaseException | None, result: Any, *,
           classifiers: tuple[Classifier | None, ...], default_backoff: Backoff,
           max_deferrals: int, max_result_bytes: int) -> Outcome:
    """The outcome of one attempt. Rules, in order:

    1. no exception: complete with the encoded result (a result that is not JSON or too
       large fails the job: running again would produce the same);
    2. :class:`UnrecoverableError`: fail now; :class:`RateLimited`: back to the head of its
       line without an attempt, its group (or the queue) parked for its seconds;
    3. the task's classifier, then the worker's: FAIL, RETRY or a :class:`RetryAfter`;
    4. :class:`RetryAfter` (raised or classified) defers without using an attempt, while
       fewer than ``max_deferrals`` deferrals were made; past that it is a failed attempt;
    5. otherwise retry with backoff while attempts remain, else fail.
    """
    if exc is None:
        try:
            return Outcome("complete", result=codec.dumps(result, "result", max_result_bytes))
        except InvalidInput as bad:
            return Outcome("fail", error=error_json(bad, type(bad).__name__))
    if isinstance(exc, UnrecoverableError):
        return Outcome("fail", error=error_json(exc))
    if isinstance(exc, RateLimited):
        return Outcome("throttle", delay_ms=max(int(exc.seconds * 1000), 1), scope=exc.scope)
    decision: Decision | RetryAfter | None = None
    for classify in classifiers:
        if classify is not None and decision is None:
            try:
                decision = classify(exc, job)
            except Exception:  # a broken classifier must not strand the job
                decision = None
    if decision is None and isinstance(exc, RetryAfter):
        decision = exc
    if decision is Decision.FAIL:
        return Outcome("fail", error=error_json(exc))
    if isinstance(decision, RetryAfter) and job.deferrals < max_deferrals:
        return Outcome("retry", delay_ms=int(decision.seconds * 1000), error=error_json(exc),
                       count_attempt=False)
    if job.attempt >= job.max_attempts:
        return Outcome("fail", error=error_json(exc))
    delay = _retry_delay(job, task, exc, default_backoff)
    return Outcome("retry", delay_ms=int(delay * 1000), error=error_json(exc))
