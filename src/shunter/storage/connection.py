"""Creating Redis clients from a URL, the environment, or a client the user passes in.

Responses stay as bytes (``decode_responses=False``): a corrupted or pickled job hash must
reach our decoder and fail that one job, not blow up the whole claim reply in the client.
"""

from __future__ import annotations

import os
from typing import Any

import hiredis
import redis
import redis.asyncio
import redis.asyncio.connection as aconn
import redis.connection as sconn

__all__ = [
    "DEFAULT_URL", "RedisLike", "async_client", "resolve_url", "sync_client", "sync_twin",
]

#: The conventional local Redis. No longer implied: pass it (or set ``SHUNTER_REDIS_URL``)
#: to use a server on the default port instead of the embedded one.
DEFAULT_URL = "redis://127.0.0.1:6379/0"

RedisLike = str | redis.asyncio.Redis | None


def resolve_url(url: str | None = None) -> str:
    """The URL to use: the argument, else ``$SHUNTER_REDIS_URL``, else the embedded server
    of the project's data directory (``$SHUNTER_DATA_DIR``, default ``./.shunter``), which
    is started on first use and shared by every process (see :mod:`shunter.embedded`)."""
    chosen = url or os.environ.get("SHUNTER_REDIS_URL")
    if chosen:
        return chosen
    from ..embedded import embedded_url  # deferred: only needed when nothing is configured

    return embedded_url()


class _HiredisPacking:
    """Packs commands with hiredis's C packer: redis-py's asyncio connections pack in
    Python, about 11 us per script call against 1.4 us here (bench, BENCHMARKS.md)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        head = args[0]
        # redis-py's convention: a first argument with a space is a multi-word command name
        if (isinstance(head, str) and " " in head) or (isinstance(head, bytes) and b" " in head):
            args = (*head.split(), *args[1:])
        return [hiredis.pack_command(args)]

    def pack_commands(self, commands: Any) -> list[bytes]:
        return [b"".join(self.pack_command(*command)[0] for command in commands)]


class _FastConnection(_HiredisPacking, aconn.Connection):
    pass


class _FastSSLConnection(_HiredisPacking, aconn.SSLConnection):
    pass


class _FastUnixConnection(_HiredisPacking, aconn.UnixDomainSocketConnection):
    pass


_FAST_CLASS: dict[type[Any], type[Any]] = {
    aconn.Connection: _FastConnection,
    aconn.SSLConnection: _FastSSLConnection,
    aconn.UnixDomainSocketConnection: _FastUnixConnection,
}


def async_client(redis_: RedisLike) -> tuple[redis.asyncio.Redis, bool]:
    """Return ``(client, owned)``; an owned client is closed by whoever created it.
    Clients we create pack commands with hiredis; a client passed in is used as it is."""
    if isinstance(redis_, redis.asyncio.Redis):
        return redis_, False
    if redis_ is not None and not isinstance(redis_, str):
        raise TypeError(f"redis must be a URL or a redis.asyncio.Redis, got {type(redis_).__name__}")
    client = redis.asyncio.Redis.from_url(resolve_url(redis_), decode_responses=False)
    pool = client.connection_pool
    pool.connection_class = _FAST_CLASS.get(pool.connection_class, pool.connection_class)
    return client, True


def sync_client(url: str | None = None) -> redis.Redis:
    """A blocking client for ``url`` (same resolution as :func:`resolve_url`)."""
    return redis.Redis.from_url(resolve_url(url), decode_responses=False)


_SYNC_CLASS: dict[type[Any], type[Any]] = {
    aconn.Connection: sconn.Connection,
    aconn.SSLConnection: sconn.SSLConnection,
    aconn.UnixDomainSocketConnection: sconn.UnixDomainSocketConnection,
    _FastConnection: sconn.Connection,
    _FastSSLConnection: sconn.SSLConnection,
    _FastUnixConnection: sconn.UnixDomainSocketConnection,
}


def sync_twin(client: redis.asyncio.Redis) -> redis.Redis:
    """A blocking client to the same server as an asyncio client (for threads off the loop)."""
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    kwargs["decode_responses"] = False
    cls = _SYNC_CLASS.get(pool.connection_class, sconn.Connection)
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=cls, **kwargs))
