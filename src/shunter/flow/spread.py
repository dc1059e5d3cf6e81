"""Spreading a batch of jobs across a time window (issue 11, item 7).

``queue.add_spread(entries, start=, end=, jitter=0.1, order="linear", batch_id=None)``
schedules N jobs across ``[start, end]``: job ``i`` gets slot ``i`` of N equal slots and
runs at the slot's middle, moved by a random amount of at most ``jitter × slot`` either
way, and never outside the window. With ``jitter <= 0.5`` the jobs also keep their order.
``order="random"`` deals the slots out in a random order instead (still one job per
slot). A ``batch_id`` makes the call idempotent (the job ids are ``<batch_id>.<index>``,
and a re-sent batch finds its jobs instead of adding them again) and the jitter
reproducible. The jobs go out as one ``add_bulk``: one pipelined round trip.

This module only computes times and rewrites entries; the queue enqueues them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from .. import codec
from ..errors import InvalidInput

__all__ = ["MAX_WINDOW", "spread_entries", "spread_offsets"]

#: Longest window (seconds): as for ``delay`` and ``run_at``.
MAX_WINDOW = 366 * 86400.0
#: Longest batch id, so that ``<batch_id>.<index>`` stays a valid job id.
MAX_BATCH_ID = 100

Order = Literal["linear", "random"]


def spread_offsets(count: int, start: float, end: float, *, jitter: float = 0.1,
                   order: Order = "linear", rng: random.Random | None = None) -> list[float]:
    """Run times (seconds, in ``[start, end]``) for ``count`` jobs, by index: job ``i`` at
    ``start + (slot_i + 0.5) × slot ± jitter × slot``, clipped to the window, where ``slot
    = (end - start) / count`` and ``slot_i`` is ``i`` (linear) or a random permutation."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise InvalidInput(f"count must be an int >= 0, got {count!r}")
    if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0 <= jitter <= 1:
        raise InvalidInput(f"jitter must be a fraction of a slot between 0 and 1, got {jitter!r}")
    if order not in ("linear", "random"):
        raise InvalidInput(f"order must be 'linear' or 'random', got {order!r}")
    if not (math.isfinite(start) and math.isfinite(end)) or end < start:
        raise InvalidInput(f"the window must have start <= end, got [{start!r}, {end!r}]")
    if end - start > MAX_WINDOW:
        raise InvalidInput(f"the window is longer than 366 days: {end - start:g} s")
    r = rng or random.Random()
    slots = list(range(count))
    if order == "random":
        r.shuffle(slots)
    slot = (end - start) / count if count else 0.0
    out = []
    for index in slots:
        at = start + (index + 0.5) * slot
        if jitter:
            at += r.uniform(-jitter, jitter) * slot
        out.append(min(max(at, start), end))
    return out


def _window_end(value: object, what: str) -> float | datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidInput(f"{what} must be timezone-aware (e.g. datetime.now(UTC)), got a "
                               "naive datetime")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInput(f"{what} must be an aware datetime or seconds from now, got {value!r}")
    if not 0 <= value <= MAX_WINDOW:
        raise InvalidInput(f"{what} must be between 0 and 366 days from now, got {value!r}")
    return float(value)


def spread_entries(entries: Sequence[Mapping[str, Any]], *, start: float | datetime,
                   end: float | datetime, jitter: float = 0.1, order: Order = "linear",
                   batch_id: str | None = None) -> list[dict[str, Any]]:
    """``add_bulk`` entries with each job's time set: ``delay`` (seconds from now, server
    time) when ``start`` and ``end`` are numbers, ``run_at`` when they are aware datetimes;
    with ``batch_id``, ``job_id`` is ``<batch_id>.<index>`` unless the entry has its own."""
    if isinstance(entries, (str, bytes, Mapping)) or not isinstance(entries, Sequence):
        raise InvalidInput("add_spread takes a list of add_bulk entries (dicts)")
    first, last = _window_end(start, "start"), _window_end(end, "end")
    if isinstance(first, datetime) != isinstance(last, datetime):
        raise InvalidInput("start and end must both be datetimes or both seconds from now")
    if batch_id is not None:
        codec.validate_job_id(batch_id)
        if len(batch_id) > MAX_BATCH_ID:
            raise InvalidInput(f"batch_id is longer than {MAX_BATCH_ID} characters")
    out: list[dict[str, Any]] = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise InvalidInput(f"add_spread entries must be dicts, got {type(entry).__name__}")
        timed = {"delay", "run_at"} & set(entry)
        if timed:
            raise InvalidInput(f"add_spread sets each job's time: remove {sorted(timed)} from "
                               "the entries")
        out.append(dict(entry))
    rng = random.Random(batch_id) if batch_id is not None else None
    if isinstance(first, datetime) and isinstance(last, datetime):
        span = (last - first).total_seconds()
        offsets = spread_offsets(len(out), 0.0, span, jitter=jitter, order=order, rng=rng)
        for entry, offset in zip(out, offsets, strict=True):
            entry["run_at"] = first + timedelta(seconds=offset)
    else:
        assert isinstance(first, float) and isinstance(last, float)
        offsets = spread_offsets(len(out), first, last, jitter=jitter, order=order, rng=rng)
        for entry, offset in zip(out, offsets, strict=True):
            entry["delay"] = offset
    if batch_id is not None:
        for index, entry in enumerate(out):
            entry.setdefault("job_id", f"{batch_id}.{index}")
    return out
