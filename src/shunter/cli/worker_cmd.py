"""``shunter worker``: run the Worker defined in user code, in one or N processes."""

from __future__ import annotations

import asyncio
import gc
import importlib
import inspect
import logging
import os
import sys
from collections.abc import Coroutine
from typing import Any

import click

from ..worker import Worker
from .common import redis_option, resolve
from .supervisor import Supervisor

__all__ = ["build_worker", "load_target", "worker"]

log = logging.getLogger("shunter.cli")


def load_target(target: str) -> Any:
    """Import ``module:attribute`` (the current directory is importable, as with uvicorn)."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise click.BadParameter("expected module:attribute, e.g. app.tasks:worker",
                                 param_hint="TARGET")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}", param_hint="TARGET") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise click.BadParameter(f"{module_name!r} has no attribute {attr!r}", param_hint="TARGET")
        obj = getattr(obj, part)
    return obj


def build_worker(obj: Any, queues: list[str], url: str | None, concurrency: int | None,
                 shutdown_timeout: float | None) -> Worker:
    """The one Worker of this process, from a Worker object or a factory returning one. A
    factory gets ``queues=`` (or ``queue=``, the first one) and ``redis=`` if its
    signature accepts them; whatever it could not take, and every override of a Worker
    object, is applied with :meth:`Worker.replace`, which keeps every other option."""
    changes: dict[str, Any] = {}
    if isinstance(obj, Worker):
        made = obj
        if queues:
            changes["queues"] = queues
        if url is not None:
            changes["redis"] = url
    elif callable(obj):
        params = inspect.signature(obj).parameters
        kwargs: dict[str, Any] = {}
        if queues and "queues" in params:
            kwargs["queues"] = queues
        elif queues and "queue" in params:
            kwargs["queue"] = queues[0]  # the factory's options, then all the queues
            if len(queues) > 1:
                changes["queues"] = queues
        elif queues:
            changes["queues"] = queues
        if url is not None:
            if "redis" in params:
                kwargs["redis"] = url
            else:
                changes["redis"] = url
        made = obj(**kwargs)
        if not isinstance(made, Worker):
            raise click.BadParameter(f"the factory returned {type(made).__name__}, not a "
                                     "shunter.Worker", param_hint="TARGET")
    else:
        raise click.BadParameter(f"{type(obj).__name__} is neither a shunter.Worker nor a "
                                 "function returning one", param_hint="TARGET")
    if concurrency:
        changes["concurrency"] = concurrency
    if shutdown_timeout is not None:
        changes["shutdown_timeout"] = shutdown_timeout
    return made.replace(**changes) if changes else made


def _child_argv(target: str, queues: list[str], url: str, concurrency: int | None, burst: bool,
                shutdown_timeout: float | None, log_level: str) -> list[str]:
    argv = [sys.executable, "-m", "shunter.cli", "worker", target, "--redis", url,
            "--log-level", log_level]
    for q in queues:
        argv += ["--queues", q]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    if shutdown_timeout is not None:
        argv += ["--shutdown-timeout", str(shutdown_timeout)]
    if burst:
        argv.append("--burst")
    return argv


@click.command()
@click.argument("target")
@click.option("-Q", "--queues", "queue_args", multiple=True, metavar="NAMES",
              help="Queue name(s), comma-separated or repeated, served by one worker in this "
                   "order (default: the queues of the Worker in TARGET).")
@click.option("-c", "--concurrency", type=click.IntRange(1, 10_000),
              help="Jobs run at once per worker (default: the Worker's own).")
@click.option("--burst", is_flag=True, help="Exit once the queues are empty.")
@click.option("-p", "--processes", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Run N supervised worker processes, restarted if they crash.")
@click.option("--shutdown-timeout", type=click.FloatRange(0, 86400),
              help="Seconds in-flight jobs get to finish on SIGTERM (default: the Worker's own).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True)
@click.option("--loop", "loop_kind", type=click.Choice(["auto", "asyncio", "uvloop"]),
              default="auto", show_default=True,
              help="Event loop: uvloop where installed (auto), or the standard one.")
@redis_option
def worker(target: str, queue_args: tuple[str, ...], concurrency: int | None, burst: bool,
           processes: int, shutdown_timeout: float | None, log_level: str, loop_kind: str,
           redis_url: str | None) -> int:
    """Run the worker TARGET, given as module:attribute — a shunter.Worker, or a function
    that returns one (called with queue= and redis= if it takes them).

    SIGTERM or Ctrl-C stops claiming and lets in-flight jobs finish (a second one hands
    them back to the queue at once).
    """
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    queues = [q.strip() for arg in queue_args for q in arg.split(",") if q.strip()]
    obj = load_target(target)  # fail fast on a bad target, in the supervisor too
    if processes > 1:
        url = resolve(redis_url)  # resolved once, so N children never race to start a server
        argv = _child_argv(target, queues, url, concurrency, burst, shutdown_timeout, log_level)
        argv += ["--loop", loop_kind]
        return Supervisor(argv, processes, burst=burst).run()
    built = build_worker(obj, queues, resolve(redis_url) if redis_url else None, concurrency,
                         shutdown_timeout)
    log.info("running a worker on %s (pid %d)%s", ", ".join(built.queues), os.getpid(),
             " in burst mode" * burst)
    # Everything made so far (the app's modules, its tasks, the worker) lives as long as
    # the process: freezing it keeps the cyclic GC from scanning it again at every
    # collection, about 6-10 % of the worker's CPU per job (BENCHMARKS.md).
    gc.freeze()
    run_on_loop(built.run(burst=burst), loop_kind)
    return 0


def run_on_loop(coro: Coroutine[Any, Any, None], kind: str) -> None:
    """Run the workers on uvloop when asked or (auto) when it is installed: it cuts worker
    CPU per job by about a quarter (BENCHMARKS.md)."""
    if kind != "asyncio":
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise click.UsageError("--loop uvloop: uvloop is not installed") from None
        else:
            uvloop.run(coro)
            return
    asyncio.run(coro)
