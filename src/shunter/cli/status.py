"""``shunter status``: queues with their counts per state, live workers, throughput."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time

import click
import orjson
import redis.asyncio
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table

from ..stats import QueueStats, discover_queues, queue_stats
from .common import console, redis_option, resolve, run

__all__ = ["status"]

STATES = ("waiting", "scheduled", "active", "completed", "failed", "cancelled")


async def collect(client: redis.asyncio.Redis, names: list[str], window: float) -> list[QueueStats]:
    queues = names or await discover_queues(client)
    return list(await asyncio.gather(*(queue_stats(client, q, window=window) for q in queues)))


def render(stats: list[QueueStats], url: str, window: float) -> RenderableType:
    # A busy queue's capped event stream may hold less than the window: its rate is over
    # the span it holds, shown next to it.
    queues = Table(title=f"queues on {url} (jobs/s over the last {window:g}s, or over the "
                   "shorter span in brackets)", title_justify="left")
    queues.add_column("queue")
    for state in STATES:
        queues.add_column(state, justify="right")
    queues.add_column("paused")
    queues.add_column("workers", justify="right")
    queues.add_column("jobs/s", justify="right")
    for q in stats:
        queues.add_row(q.name, *(str(q.counts.get(s, 0)) for s in STATES),
                       "yes" if q.counts.get("paused") else "", str(len(q.workers)),
                       f"{q.per_second:.2f}" + (f" ({q.span:.3g}s)" if q.span < q.window else ""))
    parts: list[RenderableType] = [queues if stats else "no queues found"]
    beats = [w for q in stats for w in q.workers]
    if beats:
        workers = Table(title="workers alive", title_justify="left")
        for column in ("worker", "queue", "running", "completed", "failed", "up"):
            workers.add_column(column)
        now = time.time()
        for w in beats:
            counters = w.get("counters") or {}
            workers.add_row(str(w.get("id")), str(w.get("queue")),
                            f"{w.get('running', 0)}/{w.get('concurrency', '?')}",
                            str(counters.get("completed", 0)), str(counters.get("failed", 0)),
                            f"{max(now - float(w.get('started_at') or now), 0):.0f}s")
        parts.append(workers)
    return Group(*parts)


@click.command()
@click.argument("queues", nargs=-1, metavar="[QUEUE]...")
@click.option("-w", "--watch", is_flag=True, help="Refresh until Ctrl-C.")
@click.option("-i", "--interval", type=click.FloatRange(0.1, 3600), default=2.0, show_default=True,
              help="Seconds between refreshes with --watch.")
@click.option("--window", type=click.FloatRange(1, 86400), default=60.0, show_default=True,
              help="Seconds of events that throughput is computed over.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@redis_option
def status(queues: tuple[str, ...], watch: bool, interval: float, window: float, as_json: bool,
           redis_url: str | None) -> None:
    """Counts per state, workers alive and throughput of QUEUEs (default: every queue
    found on the server)."""
    url = resolve(redis_url)
    names = list(queues)

    async def once() -> list[QueueStats]:
        client = redis.asyncio.Redis.from_url(url, decode_responses=False)
        try:
            return await collect(client, names, window)
        finally:
            await client.aclose()

    if as_json and not watch:
        sys.stdout.write(orjson.dumps([q.to_json() for q in run(once())],
                                      option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    if not watch:
        console.print(render(run(once()), url, window))
        return

    async def follow() -> None:
        client = redis.asyncio.Redis.from_url(url, decode_responses=False)
        try:
            if not console.is_terminal:  # piped: one snapshot per refresh, for logs
                while True:
                    console.print(render(await collect(client, names, window), url, window))
                    console.print()
                    sys.stdout.flush()
                    await asyncio.sleep(interval)
            with Live(render(await collect(client, names, window), url, window), console=console,
                      auto_refresh=False) as live:
                while True:
                    await asyncio.sleep(interval)
                    live.update(render(await collect(client, names, window), url, window), refresh=True)
        finally:
            await client.aclose()

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how --watch ends
        run(follow())
