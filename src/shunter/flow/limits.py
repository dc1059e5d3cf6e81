"""Limits on how fast and how many jobs start: rate limits, concurrency, weights, and the
settings that carry them to the server (issue 11, items 1 and 8).

A :class:`Rate` is ``limit`` starts per ``per`` seconds with ``burst`` starts allowed at
once. The server enforces it with the generic cell rate algorithm (``lua/lib/gcra.lua``):
over any window of length W, at most ``burst + floor(W · limit / per)`` jobs start. So
``Rate(3, per=3600)`` never starts a 4th job within an hour of the first (they go 20
minutes apart), and ``Rate(3, per=3600, burst=3)`` lets three go at once, then one every
20 minutes. No fixed windows: never twice the limit across a window boundary.

Limits are checked when jobs are claimed: a job over a limit is never claimed, so it uses
no attempt and writes no event. This module validates and encodes; the queue stores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInput

__all__ = [
    "MAX_CONCURRENCY", "MAX_RATE_LIMIT", "MAX_RATE_PERIOD", "MAX_WEIGHT", "GroupInfo", "Rate",
    "concurrency_value", "group_pairs", "rate_pairs",
]

#: Highest concurrency limit (queue-wide, or per group).
MAX_CONCURRENCY = 1_000_000
#: Highest ``limit`` of a :class:`Rate` (starts per period).
MAX_RATE_LIMIT = 1_000_000
#: Longest period of a :class:`Rate` (seconds): 366 days.
MAX_RATE_PERIOD = 366 * 86400.0
#: Shortest period of a :class:`Rate` (seconds): 1 ms.
MIN_RATE_PERIOD = 0.001
#: Highest group weight (weights are relative; 1 is the default).
MAX_WEIGHT = 1000.0


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInput(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _count(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{what} must be an int from {low:,} to {high:,}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Rate:
    """``limit`` job starts per ``per`` seconds, ``burst`` of them allowed at once (1 by
    default: evenly spaced). Over any window of W seconds at most
    ``burst + floor(W * limit / per)`` jobs start. Raises
    :class:`~shunter.errors.InvalidInput` for a limit outside 1..1,000,000, a period
    outside 1 ms..366 days, or a burst outside 1..1,000,000."""

    limit: int
    per: float = 1.0
    burst: int = 1

    def __post_init__(self) -> None:
        _count(self.limit, "Rate limit", 1, MAX_RATE_LIMIT)
        per = _number(self.per, "Rate per (seconds)")
        if not MIN_RATE_PERIOD <= per <= MAX_RATE_PERIOD:
            raise InvalidInput(f"Rate per must be seconds from 0.001 to 366 days, got {self.per!r}")
        _count(self.burst, "Rate burst", 1, MAX_RATE_LIMIT)

    @property
    def interval_ms(self) -> float:
        """Milliseconds between two starts at the sustained rate."""
        return self.per * 1000.0 / self.limit

    def encode(self) -> str:
        """The stored form, ``"limit:period_ms:burst"`` (what :meth:`decode` reads)."""
        return f"{self.limit}:{self.per * 1000.0:.17g}:{self.burst}"

    @classmethod
    def decode(cls, text: bytes | str | None) -> Rate | None:
        """The rate stored as :meth:`encode` wrote it; None for none (or unreadable)."""
        if not text:
            return None
        try:
            limit, period_ms, burst = (text.decode() if isinstance(text, bytes) else text).split(":")
            return cls(int(limit), float(period_ms) / 1000.0, int(burst))
        except (ValueError, InvalidInput):
            return None

    def __str__(self) -> str:
        burst = f", burst {self.burst}" if self.burst > 1 else ""
        return f"{self.limit}/{self.per:g}s{burst}"


def concurrency_value(value: object, what: str = "concurrency") -> str:
    """A concurrency limit as stored: ``"0"`` for none, else the count (1..1,000,000)."""
    return str(_count(value, what, 0, MAX_CONCURRENCY))


#: The stored names of a rate (as given, interval, burst), by where it applies.
_RATE_NAMES = {
    "": ("rate", "rate_interval", "rate_burst"),  # the queue's own
    "group_": ("group_rate", "group_interval", "group_burst"),  # every group's default
    "group:": ("rate", "interval", "burst"),  # one group's override (its own hash)
}


def rate_pairs(rate: Rate | int | None, prefix: str) -> list[str]:
    """The setting pairs that store ``rate`` under ``prefix`` ("" for the queue's own,
    "group_" for the groups' default): a :class:`Rate`, or 0 to remove it. For a group's
    own override (``prefix`` "group:"), 0 means "no rate limit for this group"."""
    if rate is None:
        return []
    override = prefix == "group:"
    display, interval, burst = _RATE_NAMES[prefix]
    if isinstance(rate, Rate):
        return [display, rate.encode(), interval, f"{rate.interval_ms:.17g}", burst, str(rate.burst)]
    if rate == 0 and not isinstance(rate, bool):
        if override:  # an explicit "no limit" that wins over the default
            return [display, "0", interval, "0", burst, ""]
        return [display, "", interval, "", burst, ""]
    raise InvalidInput(f"rate must be a shunter.Rate, or 0 for none, got {rate!r}")


def group_pairs(concurrency: int | None, rate: Rate | int | None,
                weight: float | None) -> list[str]:
    """The setting pairs of one group's overrides (see ``lua/configure_group.lua``)."""
    pairs: list[str] = []
    if concurrency is not None:
        pairs += ["concurrency", concurrency_value(concurrency)]
    pairs += rate_pairs(rate, "group:")
    if weight is not None:
        w = _number(weight, "weight")
        if not 0.001 <= w <= MAX_WEIGHT:
            raise InvalidInput(f"weight must be from 0.001 to {MAX_WEIGHT:g}, got {weight!r}")
        pairs += ["weight", f"{w:.17g}"]
    return pairs


@dataclass(slots=True)
class GroupInfo:
    """One group as :meth:`shunter.Queue.group` and ``shunter groups QUEUE`` show it."""

    name: str
    waiting: int  #: jobs in its line now
    scheduled: int  #: jobs scheduled for later (a delay, a run time, a retry's backoff)
    active: int  #: jobs running now (its concurrency slots in use)
    completed: int  #: jobs that completed, since the group was first seen
    failed: int  #: jobs that failed for good
    cancelled: int  #: jobs cancelled
    paused: bool
    concurrency: int | None  #: its limit (override, else the queue's default; None: none)
    rate: Rate | None  #: its rate limit (override, else the default; None: none)
    weight: float  #: its share in fair queueing (1 by default)
    #: "ready" (can start a job now), "blocked" (rate limit or RateLimited: until
    #: ``next_eligible_ms``), "full" (at its concurrency limit), "paused" or "idle" (no job
    #: waiting)
    state: str
    next_eligible_ms: int | None  #: unix ms when a blocked group can start its next job

    def as_dict(self) -> dict[str, Any]:
        """A plain dict (JSON-ready: the rate as text)."""
        out = {name: getattr(self, name) for name in self.__slots__}
        out["rate"] = None if self.rate is None else str(self.rate)
        return out
