"""``shunter demo``: the scenario apps of ``examples/scenarios`` on an owned embedded server.

Runs in the main thread of the ``shunter`` process: it starts a server that dies with the
process (even on ``kill -9``), runs the three scenario apps side by side on one event loop,
draws a live view (queue counts, a progress bar per plan being generated) from the
queues' event streams, prints a summary, stops the server and removes its data directory.
The scenarios are ordinary example applications; the demo only chooses how much to
compress their time (``speed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

from .. import embedded as server
from ..events import Event, QueueEvents, progress_of
from ..queue import Queue

__all__ = ["SCENARIOS", "load_scenario", "run_demo", "scenarios_dir"]

#: Scenario module -> (title, keyword arguments of its ``run`` at speed 1).
SCENARIOS: dict[str, tuple[str, Callable[[float], dict[str, float]]]] = {
    "plan_pipeline": ("AI plan generation (scenario 2)",
                      lambda speed: {"time_scale": 0.01 / speed, "stage_seconds": 0.6 / speed}),
    "webhooks": ("webhook ingestion (scenario 3)",
                 lambda speed: {"time_scale": 0.0025 / speed}),
    "engagement": ("engagement automation (scenario 1)",
                   lambda speed: {"time_scale": 1 / 1500 / speed}),
}
STATES = ("waiting", "scheduled", "active", "completed", "failed")


def scenarios_dir() -> Path:
    """Where the scenario apps live: inside an installed wheel, else the source checkout."""
    package = Path(__file__).resolve().parent.parent  # shunter/
    for candidate in (package / "_scenarios", package.parent.parent / "examples" / "scenarios"):
        if (candidate / "plan_pipeline.py").is_file():
            return candidate
    raise server.ServerError("the scenario apps (examples/scenarios) are not installed with "
                             "this copy of shunter; run the demo from a source checkout")


def load_scenario(name: str) -> ModuleType:
    """Import ``examples/scenarios/<name>.py`` as module ``shunter_scenarios.<name>``."""
    module_name = f"shunter_scenarios.{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, scenarios_dir() / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load scenario {name}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


class View:
    """The live picture: counts per queue, event tallies, one progress bar per plan."""

    def __init__(self, console: Console, queues: dict[str, str], plans_queue: str) -> None:
        self.console = console
        self.plain = not console.is_terminal
        self.queues = queues  # scenario -> queue name
        self.plans_queue = plans_queue
        self.counts: dict[str, dict[str, int]] = {q: {} for q in queues.values()}
        self.tally: dict[str, Counter[str]] = {q: Counter() for q in queues.values()}
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=30),
                                 TextColumn("{task.percentage:>3.0f}%"), console=console)
        self.bars: dict[str, TaskID] = {}

    def event(self, queue: str, event: Event) -> None:
        self.tally[queue][event.name] += 1
        if queue == self.plans_queue and event.job_id:
            self._plan_event(event)

    def _say(self, text: str) -> None:
        if self.plain:
            self.console.print(text, markup=False)

    def _plan_event(self, event: Event) -> None:
        job = event.job_id
        if job not in self.bars:
            self.bars[job] = self.progress.add_task(f"{job:<12} waiting", total=100)
        bar = self.bars[job]
        if event.name == "claim":
            self.progress.update(bar, description=f"{job:<12} started")
        elif event.name == "progress":
            p = progress_of(event)
            if isinstance(p, dict):
                text = f"stage {p.get('stage')}/6 {p.get('name')}: {p.get('message')}"
                self.progress.update(bar, completed=float(p.get("percent", 0)),
                                     description=f"{job:<12} {text}")
                self._say(f"{job}: {text} ({p.get('percent')}%)")
        elif event.name == "retry":
            self.progress.update(bar, description=f"{job:<12} attempt failed, retrying")
            self._say(f"{job}: attempt failed, retrying")
        elif event.name in ("complete", "fail"):
            done = event.name == "complete"
            self.progress.update(bar, completed=100 if done else None,
                                 description=f"{job:<12} {'plan ready' if done else 'FAILED'}")
            self._say(f"{job}: {'plan ready' if done else 'failed'}")

    def render(self, elapsed: float) -> RenderableType:
        table = Table(title=f"queues ({elapsed:4.1f}s)", title_justify="left")
        table.add_column("scenario")
        table.add_column("queue")
        for state in STATES:
            table.add_column(state, justify="right")
        table.add_column("retries", justify="right")
        for scenario, queue in self.queues.items():
            counts = self.counts[queue]
            table.add_row(SCENARIOS[scenario][0], queue, *(str(counts.get(s, 0)) for s in STATES),
                          str(self.tally[queue]["retry"]))
        return Group(table, self.progress)


async def _follow(queue: str, url: str, view: View) -> None:
    async with QueueEvents(queue, url, since="0") as events:
        async for event in events:
            view.event(queue, event)


async def _run_all(url: str, queues: dict[str, str], speed: float, view: View) -> list[dict[str, Any]]:
    started = time.monotonic()
    followers = [asyncio.ensure_future(_follow(q, url, view)) for q in queues.values()]
    runs: list[asyncio.Future[dict[str, Any]]] = []
    for scenario, queue in queues.items():
        module = load_scenario(scenario)
        coro: Awaitable[dict[str, Any]] = module.run(url, queue=queue, **SCENARIOS[scenario][1](speed))
        runs.append(asyncio.ensure_future(coro))
    watchers = {q: Queue(q, url) for q in queues.values()}
    live = (contextlib.nullcontext() if view.plain else
            Live(view.render(0), console=view.console, refresh_per_second=10))
    try:
        with live as screen:
            while not all(r.done() for r in runs):
                await asyncio.wait(runs, timeout=0.1)
                for q, watcher in watchers.items():
                    view.counts[q] = await watcher.counts()
                if screen is not None:
                    screen.update(view.render(time.monotonic() - started))
            for q, watcher in watchers.items():
                view.counts[q] = await watcher.counts()
            if screen is not None:
                screen.update(view.render(time.monotonic() - started))
        return [r.result() for r in runs]
    finally:
        pending: list[asyncio.Future[Any]] = [*followers, *runs]
        for task in pending:
            task.cancel()
        await asyncio.gather(*followers, *runs, return_exceptions=True)
        for watcher in watchers.values():
            await watcher.close()


def _summary(console: Console, reports: list[dict[str, Any]], seconds: float) -> None:
    table = Table(title="summary", title_justify="left")
    for column in ("scenario", "enqueued", "duplicates ignored", "processed", "retried",
                   "dead-lettered", "seconds"):
        table.add_column(column, justify="left" if column == "scenario" else "right")
    for r in reports:
        table.add_row(r["scenario"], str(r["enqueued"]), str(r["duplicates"]), str(r["processed"]),
                      str(r["retried"]), str(r["dead_lettered"]), f"{r['seconds']:.1f}")
    console.print(table)
    by = {r["scenario"]: r for r in reports}
    plans, hooks, engage = by["plan pipeline"], by["webhooks"], by["engagement"]
    notes = [
        f"plans: enqueue answered in {plans['max_enqueue_ms']} ms at most; a second request "
        f"for a user with a plan in progress returned the existing job ({plans['duplicates']})",
        f"webhooks: retry schedule 5 s … 1 h compressed to {hooks['schedule']} s; dead letters "
        f"(replay with `shunter replay`): {', '.join(hooks['dead_letter_ids'])}",
        f"engagement: per-post stats {engage['stats']}; rejected: {engage['rejected']}",
        f"engagement: at most 3 engagements per post per hour (group rate limit "
        f"{engage['rate_per_post']} at this speed): busiest hour of a post had "
        f"{engage['busiest_hour']} starts",
    ]
    for note in notes:
        console.print(note, markup=False)
    total = {k: sum(int(r[k]) for r in reports)
             for k in ("processed", "retried", "dead_lettered", "duplicates")}
    console.print(f"summary: processed {total['processed']}, retried {total['retried']}, "
                  f"dead-lettered {total['dead_lettered']}, duplicates ignored "
                  f"{total['duplicates']}, time taken {seconds:.1f} s", markup=False)


def run_demo(console: Console, *, speed: float = 1.0, redis_url: str | None = None) -> int:
    """Run the demo; returns the exit status. With ``redis_url`` it runs on that server
    (queue names made unique, deleted afterwards) instead of an owned embedded one."""
    started = time.monotonic()
    logging.basicConfig(level=logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False, show_time=False)])
    data = Path(tempfile.mkdtemp(prefix="shunter-demo-"))
    info = None
    suffix = "" if redis_url is None else f"-{uuid.uuid4().hex[:6]}"
    queues = {name: f"demo-{name.split('_')[0]}{suffix}" for name in SCENARIOS}
    try:
        if redis_url is None:
            info = server.start(data, owned=True)
            console.print(f"shunter demo: embedded {Path(info.binary).name} (pid {info.pid}, owned: "
                          f"it stops with this process) in {data}", markup=False)
        url = info.url if info else redis_url
        assert url is not None
        console.print(f"queues: {', '.join(queues.values())}", markup=False)
        view = View(console, queues, queues["plan_pipeline"])
        reports = asyncio.run(_run_all(url, queues, speed, view))
        if redis_url is not None:
            asyncio.run(_obliterate(url, list(queues.values())))
        _summary(console, reports, time.monotonic() - started)
    finally:
        if info is not None:
            server.stop(data)
            console.print(f"server pid {info.pid} stopped; {data} removed", markup=False)
        shutil.rmtree(data, ignore_errors=True)
    return 0


async def _obliterate(url: str, names: list[str]) -> None:
    for name in names:
        async with Queue(name, url) as queue:
            await queue.obliterate(force=True)
