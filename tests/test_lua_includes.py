"""The Lua helper library and its include resolver (shunter.storage.scripts).

Each helper is one file of ``lua/lib``; a script names what it uses on ``-- include:``
lines, and the resolver puts in front of it the generated constants (error codes, claim
reply positions) and those helpers, dependencies first and each once. These tests hold
the resolver to that on a made-up library, then the real scripts: they compile on the
server, carry no helper they do not use, include explicitly what they call, and declare in
their header exactly the error codes and events their code can produce.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis.asyncio

import shunter.storage.scripts
from shunter.errors import ErrorCode
from shunter.states import ENQUEUE_EVENTS
from shunter.storage.scripts import (
    CLAIM_FIELDS,
    GENERATED,
    SCRIPTS,
    LuaIncludeError,
    build_source,
    includes_of,
    library,
)

LIB = Path(shunter.storage.scripts.__file__).parent / "lua" / "lib"


def helper(name: str, *includes: str) -> str:
    head = f"-- include: {', '.join(includes)}\n" if includes else ""
    calls = "".join(f"  {dep}()\n" for dep in includes)
    return f"{head}local function {name}()\n{calls}end"


def order(body: str, helpers: dict[str, str]) -> list[str]:
    return build_source(body, helpers)[1]


# -- the resolver, on a made-up library --------------------------------------------------

def test_include_lines_are_read_wherever_they_are() -> None:
    source = "--[[ header ]]\n-- include: a, b\nlocal x = 1\n  -- include: c\n-- includes: d\n"
    assert includes_of(source) == ["a", "b", "c"]


def test_dependencies_come_first() -> None:
    lib = {"a": helper("a", "b", "c"), "b": helper("b", "c"), "c": helper("c")}
    assert order("-- include: a\na()", lib) == ["c", "b", "a"]
    source, _ = build_source("-- include: a\na()", lib)
    positions = [source.index(f"local function {n}(") for n in ("c", "b", "a")]
    assert positions == sorted(positions)
    assert source.endswith("-- include: a\na()")  # the script's own text comes last, unchanged


def test_each_helper_is_emitted_once() -> None:
    lib = {"a": helper("a", "c"), "b": helper("b", "c"), "c": helper("c")}
    source, names = build_source("-- include: a, b, c\n-- include: a\na() b() c()", lib)
    assert names == ["c", "a", "b"]
    assert source.count("local function c(") == 1


def test_includes_are_transitive() -> None:
    lib = {"a": helper("a", "b"), "b": helper("b", "c"), "c": helper("c", "d"), "d": helper("d"),
           "unused": helper("unused")}
    assert order("-- include: a\na()", lib) == ["d", "c", "b", "a"]
    assert order("return 1", lib) == []  # nothing included, nothing carried


def test_a_cycle_is_an_error_that_names_it() -> None:
    lib = {"a": helper("a", "b"), "b": helper("b", "c"), "c": helper("c", "a")}
    with pytest.raises(LuaIncludeError, match=r"x\.lua: helpers include each other: a -> b -> c -> a"):
        build_source("-- include: a\na()", lib, "x.lua")
    with pytest.raises(LuaIncludeError, match="b -> c -> a -> b"):
        build_source("-- include: b\nb()", lib)
    with pytest.raises(LuaIncludeError, match="s -> s"):
        build_source("-- include: s\ns()", {"s": helper("s", "s")})


def test_an_unknown_name_is_an_error_that_says_where() -> None:
    lib = {"a": helper("a", "nope"), "b": helper("b")}
    with pytest.raises(LuaIncludeError, match=r"x\.lua: x\.lua includes unknown helper 'zzz'"):
        build_source("-- include: b, zzz\n", lib, "x.lua")
    with pytest.raises(LuaIncludeError, match=r"lib/a\.lua includes unknown helper 'nope' \(known: a, b\)"):
        build_source("-- include: a\n", lib, "x.lua")


def test_the_library_is_one_helper_per_file() -> None:
    files = sorted(LIB.glob("*.lua"))
    assert files
    for path in files:
        defined = re.findall(r"^local function (\w+)\(", path.read_text(), re.M)
        assert defined == [path.stem], f"{path.name} defines {defined}"
    assert set(library()) == {p.stem for p in files} | set(GENERATED)


# -- generated from Python ---------------------------------------------------------------

async def test_error_codes_and_claim_positions_come_from_python(client: redis.asyncio.Redis) -> None:
    codes = ", ".join(f"ERR_{c.name}" for c in ErrorCode)
    positions = ", ".join(f"F_{name.decode().upper()}" for name in CLAIM_FIELDS)
    source, names = build_source(
        f"-- include: claim_fields\nreturn {{{{{codes}}}, {{{positions}}}, CLAIM_FIELDS}}", library())
    assert names == ["claim_fields"]
    values, at, fields = await client.eval(source, 0)
    assert values == [int(c) for c in ErrorCode]
    assert at == list(range(1, len(CLAIM_FIELDS) + 1))
    assert tuple(fields) == CLAIM_FIELDS


# -- the real scripts ----------------------------------------------------------------------

async def test_every_script_compiles_on_the_server(client: redis.asyncio.Redis) -> None:
    for name, script in SCRIPTS.items():
        assert await client.script_load(script.source) == script.sha, name


def _code(text: str) -> str:
    """Lua text without comments (no script has ``--`` inside a string)."""
    text = re.sub(r"--\[\[.*?\]\]", "", text, flags=re.S)
    return re.sub(r"--[^\n]*", "", text)


def _calls(text: str, names: set[str]) -> set[str]:
    """The helpers of ``names`` that ``text`` uses (the generated ones by their constants)."""
    code = _code(text)
    used = {n for n in names - set(GENERATED) if re.search(rf"(?<![\w.]){n}\s*\(", code)}
    defined = set(re.findall(r"local function (\w+)\(", code))
    if "claim_fields" in names and re.search(r"\b(CLAIM_FIELDS|F_[A-Z_]+)\b", code):
        used.add("claim_fields")
    return used - defined


def _texts() -> dict[str, str]:
    """The script bodies and the library files, by where they are."""
    texts = {f"lua/{name}.lua": script.body for name, script in SCRIPTS.items()}
    texts.update({f"lua/lib/{p.name}": p.read_text() for p in LIB.glob("*.lua")})
    return texts


@pytest.mark.parametrize("where", sorted(_texts()))
def test_each_file_includes_exactly_what_it_calls(where: str) -> None:
    text = _texts()[where]
    assert sorted(includes_of(text)) == sorted(_calls(text, set(library()))), (
        "the '-- include:' lines must name the helpers this file calls, and only those")


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_no_script_carries_a_helper_it_does_not_use(name: str) -> None:
    script = SCRIPTS[name]
    helpers = library()
    reached: set[str] = set()
    todo = [script.body]
    while todo:
        for found in _calls(todo.pop(), set(script.helpers)) - reached:
            reached.add(found)
            todo.append(helpers[found])
    assert reached == set(script.helpers)
    for other in set(helpers) - reached:
        assert not re.search(rf"local function {other}\(", script.source), other


#: The helpers that count on a counter of the meta hash in k (see lib/keep_seq.lua).
COUNTING = {"emit", "waiting_score"}


def _counting_helpers() -> set[str]:
    """COUNTING and every helper that includes one of them, directly or not."""
    helpers = library()
    return {name for name in helpers
            if name in COUNTING or COUNTING & set(build_source(f"-- include: {name}\n", helpers)[1])}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_a_script_that_counts_returns_through_keep_seq(name: str) -> None:
    # A call counts the queue's events and its waiting line on in k, and keep_seq writes
    # the counters back to the meta hash: a script that carries emit or waiting_score ends
    # with `return keep_seq(k, ...)`, and returns no other way once it may have counted.
    # (tests/test_event_fields.py checks the counters after a call of each of them.)
    script = SCRIPTS[name]
    if not COUNTING & set(script.helpers):
        assert "keep_seq" not in script.helpers
        return
    code = _code(script.body).rstrip()
    counting = "|".join(sorted(_counting_helpers()))
    first = re.search(rf"(?<![\w.])({counting})\s*\(", code)
    assert first, "carries a counting helper but calls none"
    returns = [m.start() for m in re.finditer(r"\breturn\b", code)]
    assert all(code.startswith("return keep_seq(k, ", at) for at in returns if at > first.start())
    last = code.rindex("\nreturn ") + 1
    assert code.startswith("return keep_seq(k, ", last), "the last statement returns through keep_seq"
    assert not re.search(r"\n\S", code[last:]), "the last statement returns through keep_seq"


# -- each header's contract against the code ---------------------------------------------------

def _carried(name: str) -> str:
    """The code a script runs that was written by hand: its body and its library helpers."""
    script = SCRIPTS[name]
    helpers = library()
    return _code("\n".join([*(helpers[h] for h in script.helpers if h not in GENERATED), script.body]))


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_header_declares_the_error_codes_the_code_can_return(name: str) -> None:
    used = set(re.findall(r"\bERR_([A-Z_]+)", _carried(name)))
    assert {c.name for c in SCRIPTS[name].errors} == used
    assert used <= set(ErrorCode.__members__)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_header_declares_the_events_the_code_can_append(name: str) -> None:
    # An event is named by its verb as a string literal; verbs are the script names, and
    # the few events enqueue appends besides its own (states.ENQUEUE_EVENTS).
    literals = set(re.findall(r"'(\w+)'", _carried(name)))
    assert set(SCRIPTS[name].events) == literals & (set(SCRIPTS) | set(ENQUEUE_EVENTS))


def test_a_header_without_its_contract_lines_is_refused() -> None:
    helpers = library()
    with pytest.raises(ValueError, match="needs an 'Errors:' and an 'Events:' line"):
        shunter.storage.scripts.Script("x", "--[[ x: nothing\nErrors: none\n]]\nreturn 1", helpers)
    with pytest.raises(ValueError, match=r"ErrorCode lacks: \['LOST'\]"):
        shunter.storage.scripts.Script("x", "--[[ x\nErrors: LOST\nEvents: none\n]]\nreturn 1", helpers)
