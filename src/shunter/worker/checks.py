"""Startup checks of the server a worker connects to, logged once, clearly."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..errors import UnsupportedServer
from ..storage import Storage
from ..storage import server as server_facts

__all__ = ["ServerReport", "check_server"]

log = logging.getLogger("shunter.checks")

MIN_REDIS = (6, 2)
MIN_VALKEY = (7, 2)


@dataclass(frozen=True, slots=True)
class ServerReport:
    flavour: str  #: "redis" or "valkey"
    version: str
    maxmemory_policy: str
    aof: bool
    rdb: bool | None  #: None when the save config cannot be read
    warnings: tuple[str, ...]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:3] if p.isdigit())


async def check_server(storage: Storage) -> ServerReport:
    """Refuse servers older than Redis 6.2 / Valkey 7.2; warn about an eviction policy that
    could silently delete jobs, and report what persistence the server has."""
    info = await server_facts.info(storage.client)
    valkey = "valkey_version" in info or info.get("server_name") == "valkey"
    flavour = "valkey" if valkey else "redis"
    version = str(info.get("valkey_version" if valkey else "redis_version", "0"))
    minimum = MIN_VALKEY if valkey else MIN_REDIS
    if info and _version(version) < minimum:
        raise UnsupportedServer(f"{flavour} {version} is too old; shunter needs "
                                f"{flavour} >= {'.'.join(map(str, minimum))}")
    policy = str(info.get("maxmemory_policy", "unknown"))
    aof = bool(int(info.get("aof_enabled", 0) or 0))
    rdb = await server_facts.rdb_enabled(storage.client)
    warnings = []
    if policy not in ("noeviction", "unknown"):
        warnings.append(f"maxmemory-policy is {policy}: under memory pressure Redis may evict "
                        "job data and jobs will be lost; set it to noeviction")
    if not aof and rdb is False:
        warnings.append("the server has no persistence (AOF off, no RDB saves): every job is "
                        "lost if it restarts")
    for text in warnings:
        log.warning(text)
    persistence = "AOF" if aof else ("RDB snapshots" if rdb else ("none" if rdb is False else "unknown"))
    log.info("connected to %s %s (maxmemory-policy %s, persistence %s)", flavour, version, policy,
             persistence)
    return ServerReport(flavour, version, policy, aof, rdb, tuple(warnings))
