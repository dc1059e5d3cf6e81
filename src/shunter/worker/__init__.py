"""The worker runtime: :class:`Worker` wires the fetcher, acker, executor, settler, lease
keeper, handler threads, maintenance duties and hooks of one queue (see
:mod:`shunter.worker.worker` for who owns what)."""

from .hooks import Hooks
from .worker import Worker

__all__ = ["Hooks", "Worker"]
