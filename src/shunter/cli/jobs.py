"""Job and queue commands: enqueue, jobs, job, replay, cancel, pause, resume, clean."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from typing import Any

import click
import orjson
from rich.table import Table

from ..errors import JobNotFound, ShunterError
from ..job import Job
from ..queue import Queue
from ..states import State
from .common import ExitCode, console, duration, json_value, redis_option, resolve, run

__all__ = ["COMMANDS"]

queue_option = click.option("-q", "--queue", "queue_name", required=True, metavar="QUEUE",
                            help="The queue the job ids belong to.")


def _when(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= width else text[: width - 1] + "…"


def job_json(job: Job, logs: list[str] | None = None) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    error = None if job.error is None else {"type": job.error.type, "message": job.error.message,
                                            "traceback": job.error.traceback}
    out = {
        "id": job.id, "queue": job.queue, "task": job.task, "state": str(job.state),
        "data": job.data, "priority": job.priority, "attempts_made": job.attempts_made,
        "max_attempts": job.max_attempts, "deferrals": job.deferrals, "stalls": job.stalls,
        "created_at": iso(job.created_at), "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at), "cancelled_at": iso(job.cancelled_at),
        "cancelled_by": job.cancelled_by, "cancel_reason": job.cancel_reason,
        "progress": job.progress, "result": job.result, "error": error, "worker": job.worker,
    }
    if logs is not None:
        out["logs"] = logs
    return out


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


@click.command()
@click.argument("queue_name", metavar="QUEUE")
@click.argument("task")
@click.option("-d", "--data", type=json_value, default="null", show_default=True,
              help="The payload, as JSON.")
@click.option("--delay", type=duration, help="Run no earlier than this from now (90, 30s, 5m, 1h).")
@click.option("--job-id", help="Your own id; if a job with this id exists, nothing is enqueued.")
@click.option("--max-attempts", type=click.IntRange(1, 1000), default=3, show_default=True,
              help="Runs allowed before the job fails.")
@click.option("--priority", type=click.IntRange(-1000, 1000), default=0, show_default=True,
              help="Higher runs first.")
@click.option("--timeout", type=duration, help="Seconds one attempt may run.")
@redis_option
def enqueue(queue_name: str, task: str, data: Any, delay: float | None, job_id: str | None,
            max_attempts: int, priority: int, timeout: float | None, redis_url: str | None) -> None:
    """Add a job to QUEUE for TASK. Prints the job id on stdout."""
    async def go() -> Job:
        async with Queue(queue_name, resolve(redis_url)) as queue:
            return await queue.add(task, data, job_id=job_id, delay=delay, priority=priority,
                                   max_attempts=max_attempts, timeout=timeout)

    job = run(go())
    print(job.id)
    if job.existing:
        print(f"shunter: job {job.id} already exists ({job.state}); nothing enqueued", file=sys.stderr)


@click.command("jobs")
@click.argument("queue_name", metavar="QUEUE")
@click.option("-s", "--state", type=click.Choice([s.value for s in State]),
              help="Only jobs in this state (default: every state).")
@click.option("-n", "--limit", type=click.IntRange(1, 10_000), default=20, show_default=True,
              help="At most this many jobs per state.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@redis_option
def list_jobs(queue_name: str, state: str | None, limit: int, as_json: bool,
              redis_url: str | None) -> None:
    """List the jobs of QUEUE: active, waiting and scheduled oldest first, finished newest first."""
    states = [State(state)] if state else [State.ACTIVE, State.WAITING, State.SCHEDULED,
                                           State.FAILED, State.COMPLETED, State.CANCELLED]

    async def go() -> list[Job]:
        async with Queue(queue_name, resolve(redis_url)) as queue:
            ids = [i for s in states for i in await queue.job_ids(s, 0, limit - 1)]
            found = await asyncio.gather(*(queue.get_job(i) for i in ids))
        return [j for j in found if j is not None]  # a job removed meanwhile is skipped

    found = run(go())
    if as_json:
        _print_json([job_json(j) for j in found])
        return
    if not found:
        console.print(f"no {state or ''} jobs in queue {queue_name}".replace("  ", " "))
        return
    table = Table("id", "state", "task", "attempts", "created", "finished", "error / result",
                  title=f"queue {queue_name}", title_justify="left")
    for job in found:
        detail = (f"{job.error.type}: {job.error.message}" if job.error and job.state is not
                  State.COMPLETED else ("" if job.result is None else job.result))
        table.add_row(job.id, str(job.state), job.task, f"{job.attempts_made}/{job.max_attempts}",
                      _when(job.created_at), _when(job.finished_at), _short(detail))
    console.print(table)


@click.command("job")
@click.argument("job_id", metavar="ID")
@queue_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option("--logs", "log_lines", type=click.IntRange(0, 1000), default=20, show_default=True,
              help="Show the last N log lines.")
@redis_option
def show_job(job_id: str, queue_name: str, as_json: bool, log_lines: int,
             redis_url: str | None) -> None:
    """Show one job: state, attempts, times, data, progress, result or error, logs."""
    async def go() -> tuple[Job, list[str]]:
        async with Queue(queue_name, resolve(redis_url)) as queue:
            job = await queue.get_job(job_id)
            if job is None:
                raise JobNotFound(queue_name, job_id)
            return job, (await job.logs(-log_lines, -1) if log_lines else [])

    job, logs = run(go())
    if as_json:
        _print_json(job_json(job, logs))
        return
    table = Table.grid(padding=(0, 2))
    for key, value in job_json(job).items():
        if key == "error" or value is None:
            continue
        table.add_row(key, value if isinstance(value, str) else orjson.dumps(value).decode())
    console.print(table)
    if job.error:
        console.print(f"error: {job.error.type}: {job.error.message}")
        if job.error.traceback:
            console.print(job.error.traceback.rstrip(), markup=False)
    for line in logs:
        console.print(f"log: {line}", markup=False)


def _each(ids: tuple[str, ...], queue_name: str, redis_url: str | None, verb: str,
          act: Any) -> int:
    """Apply ``act(queue, id)`` to every id; one line per id; the exit code of the worst."""
    async def go() -> list[tuple[str, BaseException | str]]:
        out: list[tuple[str, BaseException | str]] = []
        async with Queue(queue_name, resolve(redis_url)) as queue:
            for job_id in ids:
                try:
                    out.append((job_id, await act(queue, job_id)))
                except ShunterError as exc:
                    out.append((job_id, exc))
        return out

    codes = []
    for job_id, outcome in run(go()):
        if isinstance(outcome, BaseException):
            print(f"shunter: {verb} {job_id}: {outcome}", file=sys.stderr)
            codes.append(ExitCode.NOT_FOUND if isinstance(outcome, JobNotFound) else ExitCode.ERROR)
        else:
            console.print(outcome)
    if not codes:
        return ExitCode.OK
    return ExitCode.ERROR if ExitCode.ERROR in codes or ExitCode.USAGE in codes else codes[0]


@click.command()
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True)
@queue_option
@redis_option
def replay(job_ids: tuple[str, ...], queue_name: str, redis_url: str | None) -> int:
    """Run failed or cancelled jobs again from attempt 1 (dead-letter replay)."""
    async def act(queue: Queue, job_id: str) -> str:
        await queue.replay(job_id)
        return f"replayed {job_id}: waiting"

    return _each(job_ids, queue_name, redis_url, "replay", act)


@click.command()
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True)
@queue_option
@click.option("--reason", default="", help="Recorded on the job.")
@redis_option
def cancel(job_ids: tuple[str, ...], queue_name: str, reason: str, redis_url: str | None) -> int:
    """Cancel jobs: waiting or scheduled ones at once, active ones via their worker."""
    async def act(queue: Queue, job_id: str) -> str:
        if await queue.cancel(job_id, by="shunter-cli", reason=reason):
            return f"cancelled {job_id}"
        return f"cancel requested for {job_id}: its worker stops it"

    return _each(job_ids, queue_name, redis_url, "cancel", act)


@click.command()
@click.argument("queue_name", metavar="QUEUE")
@redis_option
def pause(queue_name: str, redis_url: str | None) -> None:
    """Stop workers from claiming jobs of QUEUE (running jobs finish)."""
    async def go() -> None:
        async with Queue(queue_name, resolve(redis_url)) as queue:
            await queue.pause()

    run(go())
    console.print(f"paused {queue_name}")


@click.command()
@click.argument("queue_name", metavar="QUEUE")
@redis_option
def resume(queue_name: str, redis_url: str | None) -> None:
    """Let workers claim jobs of QUEUE again."""
    async def go() -> None:
        async with Queue(queue_name, resolve(redis_url)) as queue:
            await queue.resume()

    run(go())
    console.print(f"resumed {queue_name}")


@click.command()
@click.argument("queue_name", metavar="QUEUE")
@click.option("-s", "--state", type=click.Choice(["completed", "failed", "cancelled"]),
              default="completed", show_default=True)
@click.option("--older-than", type=duration, default=0.0,
              help="Only jobs finished at least this long ago (e.g. 1h, 7d). Default: all.")
@click.option("-n", "--limit", type=click.IntRange(1), help="Delete at most this many.")
@redis_option
def clean(queue_name: str, state: str, older_than: float, limit: int | None,
          redis_url: str | None) -> None:
    """Delete finished jobs of QUEUE (oldest first)."""
    async def go() -> int:
        async with Queue(queue_name, resolve(redis_url)) as queue:
            return await queue.clean(state, older_than=older_than, limit=limit)

    removed = run(go())
    console.print(f"deleted {removed} {state} job{'s' * (removed != 1)} from {queue_name}")


COMMANDS = (enqueue, list_jobs, show_job, replay, cancel, pause, resume, clean)
