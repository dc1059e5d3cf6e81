"""Loads the Lua scripts (one per transition) and runs them by SHA.

Each script file is prefixed with ``lua/_common.lua`` (shared helpers) at load time. A
``NOSCRIPT`` reply (a restarted or failed-over server) reloads the script and runs it
again: NOSCRIPT means the script did not run, so the retry is always safe.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis
import redis.asyncio
from redis.exceptions import NoScriptError

__all__ = ["CLAIM_FIELDS", "SCRIPTS", "Script"]

_LUA = Path(__file__).parent / "lua"

Arg = str | bytes | int | float


class Script:
    """One Lua script: its name (the transition it implements), full source and SHA1."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def run(self, client: redis.asyncio.Redis, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)

    def run_sync(self, client: redis.Redis, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self.source)
            return client.evalsha(self.sha, len(keys), *keys, *args)


def _load() -> dict[str, Script]:
    prelude = (_LUA / "_common.lua").read_text()
    return {
        path.stem: Script(path.stem, prelude + "\n" + path.read_text())
        for path in sorted(_LUA.glob("*.lua"))
        if not path.name.startswith("_")
    }


#: Every script by name; the names are the transitions of :mod:`shunter.states` plus the
#: fenced writes and queue operations.
SCRIPTS: dict[str, Script] = _load()


def _claim_fields() -> tuple[bytes, ...]:
    prelude = (_LUA / "_common.lua").read_text()
    found = re.search(r"local CLAIM_FIELDS = \{(.*?)\}", prelude, re.S)
    if found is None:
        raise RuntimeError("lua/_common.lua defines no CLAIM_FIELDS")
    return tuple(name.encode() for name in re.findall(r"'([a-z_]+)'", found.group(1)))


#: The fields ``claim`` returns for each job, in order (defined once, in lua/_common.lua).
CLAIM_FIELDS: tuple[bytes, ...] = _claim_fields()
