"""``shunter worker``: run the Worker defined in user code, in one or N processes."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any

import click
import redis.asyncio

from ..worker import Worker
from .common import redis_option, resolve
from .supervisor import Supervisor

__all__ = ["build_workers", "load_target", "worker"]

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


def _clone(base: Worker, queue: str, redis_: str | redis.asyncio.Redis,
           concurrency: int | None, shutdown_timeout: float | None) -> Worker:
    """The same tasks and options on another queue, server or concurrency."""
    conc = concurrency or base.concurrency
    batch = None if base.batch == min(base.concurrency, 50) else min(base.batch, conc)
    return Worker(queue, base.tasks, redis_, concurrency=conc, lease=base.lease,
                  job_timeout=base.job_timeout, max_stalls=base.max_stalls,
                  shutdown_timeout=base.shutdown_timeout if shutdown_timeout is None else shutdown_timeout,
                  cancel_grace=base.cancel_grace, classify=base.classify,
                  default_backoff=base.default_backoff, max_deferrals=base.max_deferrals,
                  batch=batch, max_payload_bytes=base.storage.max_payload_bytes,
                  block_timeout=base.block_timeout, processes=base.processes.size)


def _instantiate(obj: Any, queues: list[str], url: str | None) -> tuple[list[Worker], bool, bool]:
    """``(workers, per_queue, with_url)``: the Worker object itself, or what the factory
    returned (one per queue if it takes ``queue``; given ``redis=url`` if it takes it)."""
    if isinstance(obj, Worker):
        return [obj], False, False
    if not callable(obj):
        raise click.BadParameter(f"{type(obj).__name__} is neither a shunter.Worker nor a "
                                 "function returning one", param_hint="TARGET")
    params = inspect.signature(obj).parameters
    per_queue, with_url = bool(queues) and "queue" in params, url is not None and "redis" in params
    made = []
    for queue in queues if per_queue else [None]:
        kwargs: dict[str, Any] = {}
        if queue is not None:
            kwargs["queue"] = queue
        if with_url:
            kwargs["redis"] = url
        worker = obj(**kwargs)
        if not isinstance(worker, Worker):
            raise click.BadParameter(f"the factory returned {type(worker).__name__}, not a "
                                     "shunter.Worker", param_hint="TARGET")
        made.append(worker)
    return made, per_queue, with_url


def build_workers(obj: Any, queues: list[str], url: str | None, concurrency: int | None,
                  shutdown_timeout: float | None) -> list[Worker]:
    """One Worker per queue from a Worker object or a factory returning one. A factory
    gets ``queue=`` and ``redis=`` if its signature accepts them; otherwise (and for a
    Worker object) the Worker is rebuilt with the same tasks and options where the
    command line asks for another queue, server, concurrency or shutdown timeout."""
    made, per_queue, with_url = _instantiate(obj, queues, url)
    names = [w.storage.keys.name for w in made]
    if queues and not per_queue:
        made, names = [made[0]] * len(queues), queues
    other_server = url if url is not None and not with_url else None
    if (queues and not per_queue) or other_server or concurrency or shutdown_timeout is not None:
        made = [_clone(w, name, other_server or w.storage.client, concurrency, shutdown_timeout)
                for w, name in zip(made, names, strict=True)]
    return made


async def run_workers(workers: list[Worker], burst: bool) -> None:
    """Run the workers side by side; SIGTERM/SIGINT go to all of them (a second signal
    hands in-flight jobs back at once). If one crashes, the others are stopped."""
    loop = asyncio.get_running_loop()

    def on_signal(sig: int) -> None:
        for w in workers:
            w._on_signal(sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    tasks = [asyncio.ensure_future(w.run(burst=burst, handle_signals=False)) for w in workers]
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    for task in done:
        if task.exception() is not None:
            for w in workers:
                await w.close()
            await asyncio.wait(tasks)
            raise task.exception() or RuntimeError("worker failed")
    await asyncio.gather(*tasks)


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
              help="Queue name(s), comma-separated or repeated; one Worker per queue "
                   "(default: the queue of the Worker in TARGET).")
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
    workers = build_workers(obj, queues, resolve(redis_url) if redis_url else None, concurrency,
                            shutdown_timeout)
    log.info("running %d worker(s) on %s (pid %d)%s", len(workers),
             ", ".join(w.storage.keys.name for w in workers), os.getpid(), " in burst mode" * burst)
    run_on_loop(run_workers(workers, burst), loop_kind)
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
