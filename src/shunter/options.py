"""Per-job options: retry backoff and retention, with their wire formats."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .errors import InvalidInput

__all__ = ["DEFAULT_BACKOFF", "DEFAULT_KEEP_COMPLETED", "DEFAULT_KEEP_FAILED", "Backoff", "Retention"]

_MAX_DELAY = 366 * 86400.0


def _seconds(value: object, what: str, *, allow_zero: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInput(f"{what} must be a finite number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero) or value > _MAX_DELAY:
        raise InvalidInput(f"{what} must be between 0 and 366 days, got {value!r}")
    return float(value)


def _fraction(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise InvalidInput(f"{what} must be a fraction between 0 and 1, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before the next attempt of a failed job.

    Build one with :meth:`fixed`, :meth:`exponential` or :meth:`schedule`. ``jitter`` is
    a fraction: the delay is multiplied by a random factor in ``[1 - jitter, 1 + jitter]``;
    ``spread`` adds a random ``[0, spread]`` seconds on top. Both avoid retry storms when
    many jobs fail together.
    """

    kind: Literal["fixed", "exponential", "schedule"]
    delays: tuple[float, ...]
    factor: float = 2.0
    max_delay: float = 3600.0
    jitter: float = 0.0
    spread: float = 0.0

    @classmethod
    def fixed(cls, seconds: float, *, jitter: float = 0.0, spread: float = 0.0) -> Backoff:
        """The same delay before every retry."""
        return cls("fixed", (_seconds(seconds, "backoff delay"),), jitter=_fraction(jitter, "jitter"),
                   spread=_seconds(spread, "spread"))

    @classmethod
    def exponential(cls, base: float, *, factor: float = 2.0, max_delay: float = 3600.0,
                    jitter: float = 0.5, spread: float = 0.0) -> Backoff:
        """``base * factor ** (attempt - 1)`` seconds, capped at ``max_delay``; jittered by
        default (±50 %)."""
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 1 <= factor <= 100:
            raise InvalidInput(f"backoff factor must be between 1 and 100, got {factor!r}")
        return cls("exponential", (_seconds(base, "backoff base"),), factor=float(factor),
                   max_delay=_seconds(max_delay, "max_delay"), jitter=_fraction(jitter, "jitter"),
                   spread=_seconds(spread, "spread"))

    @classmethod
    def schedule(cls, delays: Sequence[float], *, jitter: float = 0.0,
                 spread: float = 0.0) -> Backoff:
        """An explicit list: the n-th retry waits ``delays[n - 1]`` (the last entry repeats),
        e.g. ``Backoff.schedule([5, 15, 60, 300, 900, 3600], spread=1)``."""
        if isinstance(delays, (str, bytes)) or not isinstance(delays, Sequence) or not delays:
            raise InvalidInput("backoff schedule must be a non-empty list of seconds")
        if len(delays) > 100:
            raise InvalidInput("backoff schedule has more than 100 entries")
        return cls("schedule", tuple(_seconds(d, "backoff delay") for d in delays),
                   jitter=_fraction(jitter, "jitter"), spread=_seconds(spread, "spread"))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        r = rng or random
        n = max(attempt, 1)
        if self.kind == "schedule":
            base = self.delays[min(n, len(self.delays)) - 1]
        elif self.kind == "fixed":
            base = self.delays[0]
        else:
            try:
                base = min(self.delays[0] * self.factor ** (n - 1), self.max_delay)
            except OverflowError:  # e.g. factor 100 at attempt 200: far past any cap
                base = self.max_delay
        if self.jitter:
            base *= r.uniform(1 - self.jitter, 1 + self.jitter)
        if self.spread:
            base += r.uniform(0, self.spread)
        return min(max(base, 0.0), _MAX_DELAY)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "delays": list(self.delays), "factor": self.factor,
                "max_delay": self.max_delay, "jitter": self.jitter, "spread": self.spread}

    @classmethod
    def from_json(cls, raw: object) -> Backoff:
        if not isinstance(raw, dict) or raw.get("kind") not in ("fixed", "exponential", "schedule"):
            raise InvalidInput(f"not a backoff: {raw!r}")
        return cls(raw["kind"], tuple(float(d) for d in raw["delays"]), float(raw["factor"]),
                   float(raw["max_delay"]), float(raw["jitter"]), float(raw["spread"]))


@dataclass(frozen=True, slots=True)
class Retention:
    """How many finished jobs to keep and for how long (seconds); ``None`` = no limit.

    ``Retention(count=0)`` deletes a job as soon as it finishes. The rule of the job that
    finishes last trims the whole completed (or failed) set, as in BullMQ.
    """

    count: int | None = 1000
    age: float | None = 86400.0

    def __post_init__(self) -> None:
        if self.count is not None and (
            isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 0
        ):
            raise InvalidInput(f"retention count must be an int >= 0 or None, got {self.count!r}")
        if self.age is not None:
            _seconds(self.age, "retention age")

    @classmethod
    def coerce(cls, value: Retention | int, what: str) -> Retention:
        """Accept a :class:`Retention` or a plain count."""
        if isinstance(value, Retention):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(count=value, age=None)
        raise InvalidInput(f"{what} must be a Retention or an int count, got {value!r}")

    def encode(self) -> str:
        count = -1 if self.count is None else self.count
        age = -1 if self.age is None else int(self.age * 1000)
        return f"{count}:{age}"


#: Default retention of completed jobs: the last 1,000, for at most a day.
DEFAULT_KEEP_COMPLETED = Retention(count=1000, age=86400.0)
#: Default retention of failed and cancelled jobs (the dead-letter set): 10,000 for 7 days.
DEFAULT_KEEP_FAILED = Retention(count=10_000, age=7 * 86400.0)

#: Backoff when neither the job nor the worker's task says otherwise: 5 s, 10 s, 20 s ...
#: capped at an hour, each ±50 % jitter.
DEFAULT_BACKOFF = Backoff.exponential(5, jitter=0.5)
