"""``shunter groups``: the groups of a queue (``add(group=...)``), one group in detail, and
pause / resume of one group. Runs in the command's own event loop (``run``)."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from typing import Any

import click
import orjson
from rich.table import Table

from ..flow.limits import GroupInfo
from ..queue import Queue
from .common import console, redis_option, resolve, run

__all__ = ["groups"]


def _limit(value: int | None) -> str:
    return "-" if value is None else str(value)


def _span(seconds: float) -> str:
    """A wait for people: ``0.25s``, ``4m05s``, ``2h30m``, ``3d04h``."""
    if seconds < 60:
        return f"{seconds:.3g}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def next_eligible(info: GroupInfo, now_ms: float | None = None) -> str:
    """When a blocked group can start its next job: local time and how far off ("-" when
    it is not blocked)."""
    if info.next_eligible_ms is None:
        return "-"
    now_ms = time.time() * 1000 if now_ms is None else now_ms
    at = datetime.fromtimestamp(info.next_eligible_ms / 1000).astimezone()
    wait = max(info.next_eligible_ms - now_ms, 0) / 1000
    return f"{at:%H:%M:%S} (in {_span(wait)})"


def group_json(info: GroupInfo) -> dict[str, Any]:
    """The JSON of one group: :meth:`GroupInfo.as_dict` (``rate`` as text such as
    ``"3/3600s"``, ``next_eligible_ms`` in unix ms)."""
    return info.as_dict()


def _table(queue_name: str, found: list[GroupInfo]) -> Table:
    table = Table(title=f"groups of queue {queue_name}", title_justify="left")
    for column in ("group", "waiting", "active / limit", "rate", "weight", "state",
                   "next eligible", "completed", "failed", "cancelled"):
        table.add_column(column, justify="right" if column in (
            "waiting", "active / limit", "weight", "completed", "failed", "cancelled") else "left")
    now_ms = time.time() * 1000
    for g in found:
        table.add_row(g.name, str(g.waiting), f"{g.active} / {_limit(g.concurrency)}",
                      "-" if g.rate is None else str(g.rate), f"{g.weight:g}", g.state,
                      next_eligible(g, now_ms), str(g.completed), str(g.failed), str(g.cancelled))
    return table


def _detail(info: GroupInfo) -> Table:
    grid = Table.grid(padding=(0, 2))
    rows = [("group", info.name), ("state", info.state), ("waiting", str(info.waiting)),
            ("active", f"{info.active} of {_limit(info.concurrency)} allowed"),
            ("rate", "-" if info.rate is None else str(info.rate)),
            ("weight", f"{info.weight:g}"), ("paused", "yes" if info.paused else "no"),
            ("next eligible", next_eligible(info)), ("completed", str(info.completed)),
            ("failed", str(info.failed)), ("cancelled", str(info.cancelled))]
    for key, value in rows:
        grid.add_row(key, value)
    return grid


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


@click.command("groups")
@click.argument("queue_name", metavar="QUEUE")
@click.argument("group", required=False)
@click.option("--after", default="", metavar="GROUP",
              help="List the groups after this name (the last name of the previous page).")
@click.option("-n", "--limit", type=click.IntRange(1, 1000), default=100, show_default=True,
              help="At most this many groups.")
@click.option("--pause", "action", flag_value="pause",
              help="Stop workers from claiming jobs of GROUP (its running jobs finish).")
@click.option("--resume", "action", flag_value="resume",
              help="Let workers claim jobs of GROUP again.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@redis_option
def groups(queue_name: str, group: str | None, after: str, limit: int, action: str | None,
           as_json: bool, redis_url: str | None) -> None:
    """The groups of QUEUE in name order: jobs waiting, active against the group's
    concurrency limit, rate limit, weight, state (ready, blocked, full, paused, idle), when
    a blocked group can start again, and totals by end state. With GROUP: that group
    alone; with --pause or --resume, that group is paused or resumed first."""
    if group is None and action is not None:
        raise click.UsageError(f"--{action} needs a GROUP")
    if group is not None and (after or limit != 100):
        raise click.UsageError("--after and --limit page the list of groups; not with a GROUP")

    async def one(name: str) -> GroupInfo:
        async with Queue(queue_name, resolve(redis_url)) as queue:
            if action == "pause":
                await queue.pause_group(name)
            elif action == "resume":
                await queue.resume_group(name)
            return await queue.group(name)

    async def page() -> list[GroupInfo]:
        async with Queue(queue_name, resolve(redis_url)) as queue:
            return await queue.groups(after=after, count=limit)

    if group is not None:
        info = run(one(group))
        if as_json:
            _print_json(group_json(info))
            return
        if action is not None:
            console.print(f"{action}d group {info.name} of {queue_name}", markup=False)
        console.print(_detail(info))
        return
    found = run(page())
    if as_json:
        _print_json([group_json(g) for g in found])
        return
    if not found:
        console.print(f"no groups in queue {queue_name}" + (f" after {after}" if after else ""),
                      markup=False)
        return
    console.print(_table(queue_name, found))
    if len(found) == limit:
        console.print(f"more may follow: --after {found[-1].name}", markup=False)
