"""Loads the Lua scripts (one per transition) and runs them by SHA.

A script names the helpers it uses on a line ``-- include: check_lease, finish``; each
helper is one file, ``lua/lib/<name>.lua``, and may include others the same way. At load
time :func:`build_source` puts in front of the script's own text, dependencies first and
each once, the helpers it uses, after the constants generated here from Python: the error
codes of :class:`~shunter.errors.ErrorCode` as ``ERR_<NAME>`` (every script), and, through
the generated helper ``claim_fields``, :data:`CLAIM_FIELDS` with one index constant per
field (``F_ID``, ``F_STATE`` ...). So a script carries only what it uses, and the codes and
reply positions Python decodes have one source.

Each script opens with its contract; its ``Errors:`` and ``Events:`` lines are read into
:attr:`Script.errors` and :attr:`Script.events` (the tests hold the scripts to them).

A ``NOSCRIPT`` reply (a restarted or failed-over server) reloads the script and runs it
again: NOSCRIPT means the script did not run, so the retry is always safe.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import redis
import redis.asyncio
from redis.exceptions import NoScriptError

from ..errors import ErrorCode

__all__ = ["CLAIM_FIELDS", "GENERATED", "SCRIPTS", "LuaIncludeError", "Script", "build_source",
           "includes_of", "library"]

_LUA = Path(__file__).parent / "lua"

Arg = str | bytes | int | float

#: The fields ``claim`` returns for each job, in this order (Lua gets them as
#: ``CLAIM_FIELDS`` and ``F_<NAME>`` positions). Not HGETALL: a retried job's old traceback
#: and the bookkeeping fields would be parsed for nothing on the hot path.
CLAIM_FIELDS: tuple[bytes, ...] = (
    b"id", b"task", b"data", b"state", b"token", b"priority", b"attempts_made", b"max_attempts",
    b"stalls", b"deferrals", b"timeout_ms", b"backoff", b"created_at", b"started_at", b"progress",
    b"cancel_requested", b"group", b"throttled",
)

_INCLUDE = "-- include:"


class LuaIncludeError(ValueError):
    """A script or helper includes an unknown helper, or helpers include each other."""


def _lua_locals(names: Sequence[str], values: Sequence[object]) -> str:
    return f"local {', '.join(names)} = {', '.join(str(v) for v in values)}"


def _error_codes() -> str:
    """``local ERR_JOB_NOT_FOUND, ... = -1, ...``: every ErrorCode, in every script."""
    return ("-- generated from shunter.errors.ErrorCode\n"
            + _lua_locals([f"ERR_{code.name}" for code in ErrorCode], [int(c) for c in ErrorCode]))


def _claim_fields() -> str:
    names = ", ".join(f"'{name.decode()}'" for name in CLAIM_FIELDS)
    return ("-- generated from shunter.storage.scripts.CLAIM_FIELDS: the fields claim returns per job, and\n"
            "-- the position of each in that reply (F_ID, F_STATE ...)\n"
            f"local CLAIM_FIELDS = {{{names}}}\n"
            + _lua_locals([f"F_{name.decode().upper()}" for name in CLAIM_FIELDS],
                          range(1, len(CLAIM_FIELDS) + 1)))


#: Helpers made from Python values rather than read from ``lua/lib``.
GENERATED: dict[str, str] = {"claim_fields": _claim_fields()}


def includes_of(source: str) -> list[str]:
    """The helper names of the ``-- include: a, b`` lines of a script or helper."""
    names: list[str] = []
    for line in source.splitlines():
        text = line.strip()
        if text.startswith(_INCLUDE):
            names += [name.strip() for name in text[len(_INCLUDE):].split(",") if name.strip()]
    return names


def _resolve(source: str, helpers: Mapping[str, str], where: str) -> list[str]:
    """The helpers ``source`` needs, each once, every helper after those it includes."""
    order: list[str] = []
    done: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in done:
            return
        if name in chain:
            cycle = " -> ".join((*chain[chain.index(name):], name))
            raise LuaIncludeError(f"{where}: helpers include each other: {cycle}")
        if name not in helpers:
            by = f"lib/{chain[-1]}.lua" if chain else where
            raise LuaIncludeError(f"{where}: {by} includes unknown helper {name!r} "
                                  f"(known: {', '.join(sorted(helpers))})")
        for dep in includes_of(helpers[name]):
            visit(dep, (*chain, name))
        done.add(name)
        order.append(name)

    for name in includes_of(source):
        visit(name, ())
    return order


def build_source(source: str, helpers: Mapping[str, str], where: str = "<script>") -> tuple[str, list[str]]:
    """A script's full source: the error codes, then the helpers it includes (resolved
    through ``helpers``, name -> Lua text), then ``source`` itself; and those helpers'
    names in order. Raises :class:`LuaIncludeError` for an unknown name or a cycle."""
    names = _resolve(source, helpers, where)
    parts = [_error_codes(), *(helpers[name].rstrip("\n") for name in names), source]
    return "\n".join(parts), names


def library() -> dict[str, str]:
    """Every helper by name: the files of ``lua/lib`` and the :data:`GENERATED` ones."""
    found = {path.stem: path.read_text() for path in sorted((_LUA / "lib").glob("*.lua"))}
    clash = set(found) & set(GENERATED)
    if clash:
        raise LuaIncludeError(f"lua/lib defines generated helpers: {', '.join(sorted(clash))}")
    return found | GENERATED


def _contract(body: str, where: str) -> tuple[frozenset[ErrorCode], tuple[str, ...]]:
    """The ``Errors:`` and ``Events:`` lines of a script's header ("none" for neither)."""
    header = body.split("]]", 1)[0]
    lines = {key: value for key, _, value in (line.partition(":") for line in header.splitlines())
             if key in ("Errors", "Events")}
    if set(lines) != {"Errors", "Events"}:
        raise ValueError(f"{where}: the header needs an 'Errors:' and an 'Events:' line")

    def names(key: str) -> list[str]:
        value = lines[key].split("(")[0].strip()  # a remark in brackets may follow
        return [] if value == "none" else [n.strip() for n in value.split(",")]

    unknown = [n for n in names("Errors") if n not in ErrorCode.__members__]
    if unknown:
        raise ValueError(f"{where}: the header names error codes ErrorCode lacks: {unknown}")
    return frozenset(ErrorCode[n] for n in names("Errors")), tuple(names("Events"))


class Script:
    """One Lua script: its name (the transition it implements), full source and SHA1; the
    helpers it carries, and the error codes and events its header declares."""

    __slots__ = ("body", "errors", "events", "helpers", "name", "sha", "source")

    def __init__(self, name: str, body: str, helpers: Mapping[str, str]) -> None:
        self.name = name
        self.body = body
        self.source, self.helpers = build_source(body, helpers, f"lua/{name}.lua")
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()
        self.errors, self.events = _contract(body, f"lua/{name}.lua")

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
    helpers = library()
    return {path.stem: Script(path.stem, path.read_text(), helpers)
            for path in sorted(_LUA.glob("*.lua"))}


#: Every script by name; the names are the transitions of :mod:`shunter.states` plus the
#: fenced writes and queue operations.
SCRIPTS: dict[str, Script] = _load()
