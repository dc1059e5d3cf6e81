"""The job lifecycle as one table: states, transitions (verbs) and their legal edges.

This module is the single source of truth for the lifecycle. Each job transition is
implemented by exactly one Lua script of the same name (``lua/<name>.lua``) and one
storage method of the same name (:class:`shunter.storage.Storage`); ``tests/test_conformance.py``
checks that the three sets agree and tries every (state, transition) pair on a real server.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "ENQUEUE_EVENTS",
    "FENCED_WRITES",
    "QUEUE_OPERATIONS",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "State",
    "Transition",
]


class State(StrEnum):
    """Where a job is in its lifecycle (stored as the ``state`` field of the job hash)."""

    #: Waiting for a time: a requested delay, or the backoff before a retry.
    SCHEDULED = "scheduled"
    #: Ready to be claimed by a worker, ordered by priority then enqueue order.
    WAITING = "waiting"
    #: Claimed by a worker that holds a lease and a fencing token.
    ACTIVE = "active"
    #: The handler returned; the result is stored.
    COMPLETED = "completed"
    #: Attempts exhausted, a non-retryable error, or too many stalls: the dead-letter set.
    FAILED = "failed"
    #: Cancelled by a user before or while it ran.
    CANCELLED = "cancelled"


#: States a job never leaves except by ``replay`` or removal.
TERMINAL_STATES = frozenset({State.COMPLETED, State.FAILED, State.CANCELLED})


@dataclass(frozen=True, slots=True)
class Transition:
    """A named verb that moves a job from one of ``sources`` to one of ``targets``."""

    name: str
    sources: frozenset[State | None]
    targets: frozenset[State]
    fenced: bool  #: requires the fencing token of the current attempt
    doc: str


def _t(name: str, sources: set[State | None], targets: set[State], fenced: bool, doc: str) -> Transition:
    return Transition(name, frozenset(sources), frozenset(targets), fenced, doc)


S = State
#: Every job transition, keyed by verb. ``None`` as a source means "the job does not exist".
TRANSITIONS: dict[str, Transition] = {
    t.name: t
    for t in (
        _t("enqueue", {None}, {S.WAITING, S.SCHEDULED}, False,
           "Create a job; an existing id returns the existing job and changes nothing."),
        _t("promote", {S.SCHEDULED}, {S.WAITING}, False,
           "Move scheduled jobs whose time has come to waiting (also run inside claim)."),
        _t("claim", {S.WAITING}, {S.ACTIVE}, False,
           "Take up to N waiting jobs: new fencing token, lease deadline, attempt started."),
        _t("renew", {S.ACTIVE}, {S.ACTIVE}, True,
           "Extend the lease; reports lost leases and cancellation requests."),
        _t("complete", {S.ACTIVE}, {S.COMPLETED}, True, "Store the result."),
        _t("retry", {S.ACTIVE}, {S.SCHEDULED, S.WAITING, S.CANCELLED}, True,
           "Record a failed attempt and schedule the next one after a backoff (or cancel it, "
           "if a cancel was requested while it ran)."),
        _t("fail", {S.ACTIVE}, {S.FAILED}, True, "Record a final failure (dead-letter)."),
        _t("cancel", {S.WAITING, S.SCHEDULED, S.ACTIVE}, {S.CANCELLED, S.ACTIVE}, False,
           "Cancel a waiting or scheduled job at once; flag an active one for its worker."),
        _t("abort", {S.ACTIVE}, {S.CANCELLED}, True,
           "The worker confirms it stopped a handler whose job was cancelled."),
        _t("release", {S.ACTIVE}, {S.WAITING, S.CANCELLED}, True,
           "Hand a job back on shutdown without consuming an attempt (or cancel it, if a "
           "cancel was requested while it ran)."),
        _t("ratelimited", {S.ACTIVE}, {S.WAITING, S.CANCELLED}, True,
           "The handler raised RateLimited: back to the head of its line without an attempt, "
           "its group (or the queue) parked for the time given (or cancel it, if a cancel was "
           "requested while it ran)."),
        _t("rescue", {S.ACTIVE}, {S.WAITING, S.FAILED, S.CANCELLED}, False,
           "Recover jobs whose lease expired: back to waiting, or failed after max_stalls."),
        _t("replay", {S.FAILED, S.CANCELLED}, {S.WAITING}, False,
           "Run a failed or cancelled job again with fresh attempts."),
    )
}
del S

#: Writes that do not change the state but must come from the current lease holder.
FENCED_WRITES = ("progress", "log")

#: Operations on a whole queue; each is one script as well.
QUEUE_OPERATIONS = ("pause", "resume", "drain", "clean", "obliterate", "configure",
                    "configure_group")

#: Events not named after the script that appends them: ``enqueue`` appends ``dedup`` on
#: the holder of a dedup key when an add finds the key held, and ``debounce`` when a
#: ``Dedup.debounce`` add replaces its waiting or scheduled holder's data and run time
#: (which may move it between ``waiting`` and ``scheduled``; docs/dedup.md).
ENQUEUE_EVENTS = ("dedup", "debounce")
