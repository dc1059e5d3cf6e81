"""The storage layer: the only code that talks to Redis.

- :mod:`~shunter.storage.calls`: sans-IO call builders (KEYS, ARGV, reply readers);
- :mod:`~shunter.storage.aio`: :class:`Storage`, the asyncio side;
- :mod:`~shunter.storage.blocking`: :class:`BlockingStorage`, its blocking twin (the
  lease thread, the sync producer);
- :mod:`~shunter.storage.streams` and :mod:`~shunter.storage.heartbeats`: the event
  stream and worker heartbeats; :mod:`~shunter.storage.server`: what the server says
  about itself;
- :mod:`~shunter.storage.keys`: every key name; :mod:`~shunter.storage.connection`:
  building clients.

Nothing in here imports the runtime (worker, producers, CLI): ``make lint`` checks it.
"""

from .aio import Storage
from .blocking import BlockingStorage
from .calls import ENQUEUE_CHUNK, raise_for
from .keys import QueueKeys
from .model import (
    COUNTED,
    DEFAULT_MAX_EVENTS,
    DEFAULT_MAX_PAYLOAD,
    MAX_EVENTS_RANGE,
    MAX_PAYLOAD_RANGE,
    UNAVAILABLE,
    ClaimResult,
    Counts,
    Enqueued,
    JobSpec,
    validate_limits,
)

__all__ = [
    "COUNTED", "DEFAULT_MAX_EVENTS", "DEFAULT_MAX_PAYLOAD", "ENQUEUE_CHUNK", "MAX_EVENTS_RANGE",
    "MAX_PAYLOAD_RANGE", "UNAVAILABLE", "BlockingStorage", "ClaimResult", "Counts", "Enqueued",
    "JobSpec", "QueueKeys", "Storage", "raise_for", "validate_limits",
]
