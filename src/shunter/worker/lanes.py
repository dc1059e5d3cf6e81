"""The queues of one worker: how they are given (one name, a list in strict order, or a
mapping of weights), and a :class:`Lane` per queue binding its storage to the claimer,
acker and settler that work on it. Slots, the lease keeper, the handler threads and the
maintenance task are the worker's own and serve every lane."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import codec
from ..errors import InvalidInput

if TYPE_CHECKING:
    from ..storage import Storage
    from .acker import Acker
    from .fetcher import Claimer
    from .settler import Settler

__all__ = ["Lane", "Queues", "parse_queues"]

#: A worker's queues: one name, names in strict order, or name -> weight.
Queues = str | Sequence[str] | Mapping[str, int]

MAX_QUEUES = 1000
MAX_WEIGHT = 1000


@dataclass(frozen=True, slots=True)
class QueueOrder:
    names: tuple[str, ...]
    weights: tuple[int, ...]
    weighted: bool


def parse_queues(queues: object) -> QueueOrder:
    """Validate a worker's ``queues``: a name, a list or tuple (strict order: the first
    queue with work is served first), or a mapping of name -> weight 1..1000 (each round,
    a queue comes first with a chance proportional to its weight)."""
    if isinstance(queues, str):
        names, weights, weighted = [queues], [1], False
    elif isinstance(queues, Mapping):
        names, weights, weighted = list(queues), list(queues.values()), True
        for name, weight in queues.items():
            if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= MAX_WEIGHT:
                raise InvalidInput(f"queue weight must be an int 1..{MAX_WEIGHT}, got {weight!r} "
                                   f"for {name!r}")
    elif isinstance(queues, (list, tuple)):
        names, weights, weighted = list(queues), [1] * len(queues), False
    else:
        raise InvalidInput("queues must be a queue name, a list of names (strict order) or a "
                           f"mapping of name -> weight, got {queues!r}")
    if not names:
        raise InvalidInput("a worker needs at least one queue")
    if len(names) > MAX_QUEUES:
        raise InvalidInput(f"a worker serves at most {MAX_QUEUES} queues, got {len(names)}")
    for name in names:
        codec.validate_queue_name(name)
    if len(set(names)) != len(names):
        raise InvalidInput(f"queues are listed more than once: {names!r}")
    return QueueOrder(tuple(names), tuple(weights), weighted)


class Lane:
    """One queue of a worker: its storage, and the claimer, acker and settler bound to it
    (set by the worker once they are built)."""

    __slots__ = ("acker", "claimer", "name", "settler", "storage")

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.name = storage.keys.name
        self.claimer: Claimer
        self.acker: Acker
        self.settler: Settler

    def __repr__(self) -> str:
        return f"<Lane {self.name}>"
