"""Every Redis key name shunter uses comes from here.

All keys of one queue share the hash tag ``{<queue>}`` so that a queue lives in one
Redis Cluster slot and its scripts never cross slots.
"""

from __future__ import annotations

from ..states import State

__all__ = ["QueueKeys"]


class QueueKeys:
    """Key names for one queue. Job keys are ``<prefix>job:<id>`` (built inside scripts too)."""

    __slots__ = (
        "active", "cancelled", "claims", "completed", "events", "failed", "group_ring",
        "group_wakes", "groups", "marker", "meta", "name", "prefix", "rescue_lock", "scheduled",
        "waiting", "workers",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.prefix = f"shunter:{{{name}}}:"
        p = self.prefix
        self.waiting = p + "waiting"  #: zset, score = priority band + sequence
        self.scheduled = p + "scheduled"  #: zset, score = due time (ms)
        self.active = p + "active"  #: zset, score = lease deadline (ms)
        self.completed = p + "completed"  #: zset, score = finished time (ms)
        self.failed = p + "failed"  #: zset, score = finished time (ms)
        self.cancelled = p + "cancelled"  #: zset, score = cancelled time (ms)
        self.meta = p + "meta"  #: hash: paused flag, enqueue sequence
        self.events = p + "events"  #: capped stream, one entry per transition
        self.marker = p + "marker"  #: zset of one member that idle workers block on
        self.rescue_lock = p + "rescue-lock"  #: SET NX PX key rate-limiting stall rescue
        self.workers = p + "workers"  #: zset of worker ids that sent a heartbeat (an index)
        #: zset of claim request ids with a record (see :meth:`claim`), score = expiry (ms)
        self.claims = p + "claims"
        #: zset of every group the queue has seen (score 0: listed by name)
        self.groups = p + "groups"
        #: zset of the groups that can start a job now, score = virtual start time
        self.group_ring = p + "gring"
        #: zset of groups blocked until a time (rate limit, RateLimited), score = that time
        self.group_wakes = p + "gwake"

    def index(self, state: State) -> str:
        """The index (sorted set) of one state: ``waiting``, ``active``, ``failed`` ..."""
        return str(getattr(self, state.value))

    def group(self, group: str) -> str:
        """A group's hash: its overrides, pause flag, rate state and counts by end state."""
        return f"{self.prefix}gh:{group}"

    def group_waiting(self, group: str) -> str:
        """A group's line of waiting jobs (zset, score as the waiting index's)."""
        return f"{self.prefix}gw:{group}"

    def group_active(self, group: str) -> str:
        """The ids of a group's active jobs (set): its concurrency slots in use."""
        return f"{self.prefix}ga:{group}"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def logs(self, job_id: str) -> str:
        return f"{self.prefix}logs:{job_id}"

    def worker(self, worker_id: str) -> str:
        """A worker's heartbeat: its JSON description, SET with a PX time-to-live."""
        return f"{self.prefix}worker:{worker_id}"

    def dedup(self, key: str) -> str:
        """A dedup key (:class:`~shunter.Dedup`): the id of the job holding it, SET with a PX
        time-to-live for ``ttl`` and ``throttle`` (built in Lua too, lib/dedup_hit.lua)."""
        return f"{self.prefix}dedup:{key}"

    def claim(self, claim_id: str) -> str:
        """The (job, token) pairs one claim handed out, kept for one lease (SET PX) so that
        the same claim re-sent after a lost reply returns the same jobs (built in Lua too)."""
        return f"{self.prefix}claim:{claim_id}"
