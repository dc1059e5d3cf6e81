"""``BlockingStorage``: the blocking twin of :class:`~shunter.storage.aio.Storage`, for
code off the event loop: the lease keeper thread and the sync producer. It runs the same
sans-IO calls (:mod:`shunter.storage.calls`), so both send exactly the same commands."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import redis
from redis.exceptions import NoScriptError

from ..flow.limits import GroupInfo
from ..states import State
from . import calls
from .keys import QueueKeys
from .model import DEFAULT_MAX_EVENTS, Counts, Enqueued, JobSpec
from .scripts import SCRIPTS, Arg

__all__ = ["BlockingStorage"]

T = TypeVar("T")


class BlockingStorage:
    """Typed access to one queue's keys over a blocking client (:meth:`renew` takes the
    keys of any queue: the lease keeper serves all of a worker's queues)."""

    __slots__ = ("_raw", "client", "keys", "max_events")

    def __init__(self, client: redis.Redis, queue: str, *,
                 max_events: int = DEFAULT_MAX_EVENTS) -> None:
        self.client = client
        self._raw: Any = client
        self.keys = QueueKeys(queue)
        self.max_events = max_events

    def run(self, call: calls.Script[T]) -> T:
        return call.parse(SCRIPTS[call.name].run_sync(self.client, call.keys, call.args))

    def pipeline(self, call: calls.Commands[T]) -> T:
        with self._raw.pipeline(transaction=False) as pipe:
            for command in call.commands:
                pipe.execute_command(*command)
            return call.parse(pipe.execute())

    def enqueue(self, spec: JobSpec) -> Enqueued:
        """As :meth:`Storage.enqueue`."""
        (result,) = self.run(calls.enqueue(self.keys, [spec], self.max_events))
        if isinstance(result, Exception):
            raise result
        return result

    def enqueue_many(self, specs: Sequence[JobSpec]) -> list[Enqueued | Exception]:
        """As :meth:`Storage.enqueue_many`."""
        batch = calls.enqueue_many(self.keys, specs, self.max_events)
        script = SCRIPTS["enqueue"]

        def send(chosen: Sequence[calls.Script[Any]]) -> list[Any]:
            with self.client.pipeline(transaction=False) as pipe:
                for call in chosen:
                    pipe.evalsha(script.sha, len(call.keys), *call.keys, *call.args)
                return list(pipe.execute(raise_on_error=False))

        replies = send([call for call, _ in batch])
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            self.client.script_load(script.source)
            for i, reply in zip(missing, send([batch[i][0] for i in missing]), strict=True):
                replies[i] = reply
        return calls.enqueue_replies(batch, replies)

    def renew(self, keys: QueueKeys, lease_ms: int, held: Sequence[tuple[str, int]]) -> list[int]:
        """As :meth:`Storage.renew`, for any queue (the lease keeper serves all of a worker's)."""
        return self.run(calls.renew(keys, lease_ms, held)) if held else []

    def cancel(self, job_id: str, by: str, reason: str) -> bool:
        """As :meth:`Storage.cancel`."""
        return self.run(calls.cancel(self.keys, job_id, by, reason, self.max_events))

    def replay(self, job_id: str) -> None:
        """As :meth:`Storage.replay`."""
        self.run(calls.replay(self.keys, job_id, self.max_events))

    def pause(self) -> None:
        self.run(calls.pause(self.keys, self.max_events))

    def resume(self) -> None:
        self.run(calls.resume(self.keys, self.max_events))

    def counts(self) -> Counts:
        return self.pipeline(calls.counts(self.keys))

    def configure_group(self, group: str, pairs: Sequence[Arg]) -> None:
        """As :meth:`Storage.configure_group`."""
        self.run(calls.configure_group(self.keys, self.max_events, group, pairs))

    def group_info(self, group: str) -> GroupInfo:
        (info,) = self.pipeline(calls.group_infos(self.keys, [group]))
        return info

    def load_settings(self) -> calls.Settings:
        """The queue's stored caps (see :meth:`Storage.load_settings`); adopts max_events."""
        stored = self.pipeline(calls.settings(self.keys))
        if stored["max_events"] is not None:
            self.max_events = stored["max_events"]
        return stored

    def job_fields(self, job_id: str) -> dict[bytes, bytes]:
        """As :meth:`Storage.job_fields` (``JobNotFound`` when there is no such job)."""
        return self.pipeline(calls.job_fields(self.keys, job_id))

    def job_ids(self, state: State, start: int = 0, end: int = -1) -> list[str]:
        """As :meth:`Storage.job_ids`."""
        return self.pipeline(calls.job_ids(self.keys, state, start, end))

    def logs(self, job_id: str, start: int = 0, end: int = -1) -> list[str]:
        return self.pipeline(calls.logs(self.keys, job_id, start, end))

    def close(self) -> None:
        self.client.close()
