"""Dedup modes: one key per logical job, four ways of holding it (``add(..., dedup=...)``).

A :class:`Dedup` value is checked when it is built (``add`` checks its type), so a bad key
or period fails before any round trip. The enqueue script does the rest atomically
(``lua/lib/dedup_hit.lua``): it looks the key up, checks its holder's state, and either
answers with the holder or creates the job and gives it the key. docs/dedup.md has the
table of what releases a key in each mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ..errors import InvalidInput

__all__ = ["MAX_DEDUP_KEY_BYTES", "MAX_DEDUP_SECONDS", "Dedup", "DedupMode"]

#: Longest dedup key, in bytes of UTF-8 (the Redis key is ``shunter:{q}:dedup:<key>``).
MAX_DEDUP_KEY_BYTES = 256
#: Longest ``ttl`` or ``throttle`` period: a year. Longer is a unit mistake (ms for s).
MAX_DEDUP_SECONDS = 366 * 86400.0

DedupMode = Literal["unique", "ttl", "throttle", "debounce"]
_MODES = ("unique", "ttl", "throttle", "debounce")
_TIMED = ("ttl", "throttle")


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise InvalidInput(f"dedup key must be a str, got {type(key).__name__}")
    if not key:
        raise InvalidInput("dedup key must not be empty")
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > MAX_DEDUP_KEY_BYTES:
        raise InvalidInput(f"dedup key is {size} bytes of UTF-8, over {MAX_DEDUP_KEY_BYTES}")
    # control characters make keys that are unreadable in redis-cli, logs and events, and
    # a surrogate cannot be encoded at all: both are almost surely a bug in the caller
    if any(ord(c) < 32 or 127 <= ord(c) < 160 or 0xD800 <= ord(c) < 0xE000 for c in key):
        raise InvalidInput(f"dedup key must not contain control characters, got {key!r}")
    return key


def _check_seconds(seconds: object, mode: str) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        raise InvalidInput(f"Dedup.{mode} needs a finite number of seconds, got {seconds!r}")
    # below a millisecond the period would be stored as 0 ms: no period at all
    if not 0.001 <= seconds <= MAX_DEDUP_SECONDS:
        raise InvalidInput(f"Dedup.{mode} seconds must be from 0.001 to 366 days, got {seconds!r}")
    return float(seconds)


@dataclass(frozen=True, slots=True)
class Dedup:
    """How an ``add`` is deduplicated: by ``key``, in one of four ``mode``\\ s.

    Build it with :meth:`unique`, :meth:`ttl`, :meth:`throttle` or :meth:`debounce`. The
    key's *holder* is the job that took it. While the key is held, an ``add`` with the same
    key creates nothing and returns the holder with ``job.deduplicated = True`` (and
    ``job.existing = True``); a ``debounce`` hit also updates the holder
    (``job.debounced = True``). A held key whose holder is gone (deleted by hand, by
    retention, ``drain``) or finished is free again, whatever the mode, except a
    ``throttle`` key, which is held for its whole period. Keys are per queue.
    """

    mode: DedupMode
    key: str
    #: The period of ``ttl`` and ``throttle`` (None for the others).
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise InvalidInput(f"dedup mode must be one of {', '.join(_MODES)}, got {self.mode!r}")
        _check_key(self.key)
        if self.mode in _TIMED:
            _check_seconds(self.seconds, self.mode)
        elif self.seconds is not None:
            raise InvalidInput(f"Dedup.{self.mode} takes no seconds, got {self.seconds!r}")

    @classmethod
    def unique(cls, key: str) -> Dedup:
        """At most one unfinished job per key: while the holder is waiting, scheduled,
        active or between retries, an add with this key returns it. Released when the
        holder completes, fails for good, is cancelled or is deleted."""
        return cls("unique", key)

    @classmethod
    def ttl(cls, key: str, seconds: float) -> Dedup:
        """As :meth:`unique`, but the key also lapses ``seconds`` after the add that took
        it, finished holder or not: a bound for a holder that is stuck."""
        return cls("ttl", key, _check_seconds(seconds, "ttl"))

    @classmethod
    def throttle(cls, key: str, seconds: float) -> Dedup:
        """The first add wins for ``seconds`` from that add, whatever happens to its job
        (finishing, failing or deleting it does not release the key)."""
        return cls("throttle", key, _check_seconds(seconds, "throttle"))

    @classmethod
    def debounce(cls, key: str) -> Dedup:
        """The last payload wins. While the holder is waiting or scheduled, an add
        replaces its ``data`` and moves its run time to the add's own (``delay`` or
        ``run_at``; neither means now): a waiting holder becomes scheduled, a scheduled
        one waiting when the new time has come. Once the holder is active (or finished,
        or gone) an add creates a new job, which takes the key. Released when the holder
        finishes."""
        return cls("debounce", key)

    def fields(self) -> list[str | int]:
        """The job-hash fields that carry this value (``dedup_key``, ``dedup_mode``, and
        ``dedup_ms`` for a period), in the order the enqueue script reads them."""
        out: list[str | int] = ["dedup_key", self.key, "dedup_mode", self.mode]
        if self.seconds is not None:
            out += ("dedup_ms", max(int(self.seconds * 1000), 1))
        return out
