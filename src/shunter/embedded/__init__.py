"""The embedded server: with no Redis URL configured, shunter runs a local Valkey (or
Redis) for the project directory (see :mod:`shunter.embedded.launcher`)."""

from .launcher import (
    DEFAULT_DATA_DIR,
    ServerError,
    ServerInfo,
    data_dir,
    die_with_parent_hook,
    embedded_url,
    ensure,
    find,
    find_binary,
    start,
    stop,
)

__all__ = [
    "DEFAULT_DATA_DIR", "ServerError", "ServerInfo", "data_dir", "die_with_parent_hook",
    "embedded_url", "ensure", "find", "find_binary", "start", "stop",
]
