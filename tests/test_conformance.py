"""Conformance of the engine to the lifecycle table in :mod:`shunter.states`.

DESIGN.md requires that the table, the Lua scripts and the storage methods are the same
set, and that every (state, transition) pair is tried against a real server: a legal
source moves the job to one of the transition's targets (and into exactly that state's
index); any other state is refused with a typed error, or is a no-op for the queue-wide
verbs, and leaves the job untouched. Every event and refusal seen on the way must be one
the script's header declares (its ``Errors:`` and ``Events:`` lines; test_lua_includes.py
checks the headers against the code).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

import shunter.storage.scripts
from shunter import states
from shunter.errors import ErrorCode, JobNotFound, JobNotInState, LeaseLost
from shunter.producer import build_spec
from shunter.states import TRANSITIONS, State
from shunter.storage import JobSpec, Storage
from shunter.storage.scripts import SCRIPTS

from .conftest import eventually

pytestmark = pytest.mark.redis

#: Every state a job can be in, ``None`` being "no such job".
ALL_STATES: tuple[State | None, ...] = (None, *State)
#: Verbs that act on the queue rather than on one job id: outside their sources they
#: find nothing to do and return normally instead of raising.
QUEUE_WIDE = frozenset({"promote", "claim", "rescue"})
#: The per-state index (zset) of QueueKeys, by state.
INDEXED = tuple(State)
#: Result state of a legal transition where the table allows several targets, given the
#: arguments ``invoke`` passes (retry without a delay, enqueue without one, rescue of a
#: first stall).
EXPECTED_TARGET: dict[tuple[State | None, str], State] = {
    (None, "enqueue"): State.WAITING,
    (State.ACTIVE, "retry"): State.WAITING,
    (State.ACTIVE, "release"): State.WAITING,
    (State.ACTIVE, "ratelimited"): State.WAITING,
    (State.ACTIVE, "rescue"): State.WAITING,
    (State.ACTIVE, "cancel"): State.ACTIVE,
    (State.WAITING, "cancel"): State.CANCELLED,
    (State.SCHEDULED, "cancel"): State.CANCELLED,
}
LUA_DIR = Path(shunter.storage.scripts.__file__).parent / "lua"
LONG_LEASE_MS = 60_000
JOB = "job-1"


def _spec(job_id: str = JOB, **options: Any) -> JobSpec:
    return build_spec("task", {"n": 1}, job_id=job_id, max_payload_bytes=1 << 16, **options)


async def server_ms(client: redis.asyncio.Redis) -> int:
    sec, usec = await client.time()
    return int(sec) * 1000 + int(usec) // 1000


async def enqueue(storage: Storage, spec: JobSpec) -> tuple[bool, State | None]:
    """``(created, state)`` of one enqueue."""
    result = await storage.enqueue(spec)
    return result.created, result.state


def _pair_id(param: Any) -> str:
    return "none" if param is None else str(param)


# -- the table, the scripts and the storage methods are one set ---------------------------

def test_table_scripts_and_storage_methods_are_the_same_set() -> None:
    names = [*TRANSITIONS, *states.FENCED_WRITES, *states.QUEUE_OPERATIONS]
    assert len(names) == len(set(names)), "a name is listed twice"
    assert set(names) == set(SCRIPTS)
    for name in names:
        method = getattr(Storage, name, None)
        assert method is not None, f"Storage has no method {name}"
        assert inspect.iscoroutinefunction(method), f"Storage.{name} is not async"


def test_table_entries_are_well_formed() -> None:
    for name, t in TRANSITIONS.items():
        assert t.name == name
        assert t.sources and t.targets
        assert t.sources <= {None, *State}, name
        assert t.targets <= set(State), name


@pytest.mark.parametrize("name", [*TRANSITIONS, *states.FENCED_WRITES])
def test_fenced_flag_matches_the_script(name: str) -> None:
    # A script carries check_lease only when it includes it, and only its body calls it.
    body = (LUA_DIR / f"{name}.lua").read_text()
    assert SCRIPTS[name].source.endswith(body)
    fenced = name in states.FENCED_WRITES or TRANSITIONS[name].fenced
    calls = "check_lease(" in body
    assert calls == fenced
    assert ("check_lease" in SCRIPTS[name].helpers) == fenced


#: The error code behind each exception Storage raises for a refused transition.
CODE_OF: dict[type[Exception], ErrorCode] = {
    JobNotFound: ErrorCode.JOB_NOT_FOUND, JobNotInState: ErrorCode.NOT_IN_STATE,
    LeaseLost: ErrorCode.TOKEN_MISMATCH,
}


def assert_declared(name: str, *, code: ErrorCode | type[Exception] | None = None,
                    event: bytes | None = None) -> None:
    """What a script was seen to do is in its header's contract (its Errors:/Events: lines)."""
    script = SCRIPTS[name]
    if code is not None:
        code = code if isinstance(code, ErrorCode) else CODE_OF[code]
        assert code in script.errors, f"{name} returned {code.name}; its header does not say so"
    if event is not None:
        assert event.decode() in script.events, f"{name} appended {event!r}; its header does not say so"


# -- driving a job into a state with storage methods only -------------------------------

async def drive(storage: Storage, client: redis.asyncio.Redis, state: State | None, *,
                due_now: bool = False, lease_ms: int = LONG_LEASE_MS) -> int:
    """Put job ``JOB`` into ``state``; returns its current fencing token (0 if never claimed).

    ``due_now`` makes a scheduled job due (tiny delay, then waits for the server clock);
    ``lease_ms`` is the lease an active job gets (tiny for rescue)."""
    if state is None:
        return 0
    if state is State.SCHEDULED:
        assert await enqueue(storage, _spec(delay=0.001 if due_now else 3600)) == (
            True, State.SCHEDULED)
        if due_now:
            due = await client.zscore(storage.keys.scheduled, JOB)
            assert due is not None
            await eventually(lambda: _after(client, due), message="scheduled job due")
        return 0
    assert await enqueue(storage, _spec()) == (True, State.WAITING)
    if state is State.WAITING:
        return 0
    if state is State.CANCELLED:
        assert await storage.cancel(JOB, "test", "drive") is True
        return 0
    claimed = await storage.claim(1, lease_ms, "worker-1")
    assert len(claimed.jobs) == 1
    token = int(claimed.jobs[0][b"token"])
    if state is State.COMPLETED:
        await storage.complete(JOB, token, b'"done"')
    elif state is State.FAILED:
        await storage.fail(JOB, token, b'{"type": "Boom"}')
    elif lease_ms < LONG_LEASE_MS:
        deadline = await client.zscore(storage.keys.active, JOB)
        assert deadline is not None
        await eventually(lambda: _after(client, deadline), message="lease expired")
    assert await client.hget(storage.keys.job(JOB), "state") == state.value.encode()
    return token


async def _after(client: redis.asyncio.Redis, ms: float) -> bool:
    return await server_ms(client) > ms


async def invoke(storage: Storage, name: str, token: int) -> Any:
    """Run transition ``name`` on ``JOB`` with valid arguments."""
    calls: dict[str, Any] = {
        "enqueue": lambda: enqueue(storage, _spec()),
        "promote": lambda: storage.promote(),
        "claim": lambda: storage.claim(10, LONG_LEASE_MS, "worker-2"),
        "renew": lambda: storage.renew(LONG_LEASE_MS, [(JOB, token)]),
        "complete": lambda: storage.complete(JOB, token, b'"ok"'),
        "retry": lambda: storage.retry(JOB, token, 0, b'{"type": "Again"}'),
        "fail": lambda: storage.fail(JOB, token, b'{"type": "Boom"}'),
        "cancel": lambda: storage.cancel(JOB, "test", "conformance"),
        "abort": lambda: storage.abort(JOB, token),
        "release": lambda: storage.release(JOB, token),
        "ratelimited": lambda: storage.ratelimited(JOB, token, 1000, "group"),
        "rescue": lambda: storage.rescue(max_stalls=5, lock_ms=0),
        "replay": lambda: storage.replay(JOB),
        "progress": lambda: storage.progress(JOB, token, b'{"pct": 50}'),
        "log": lambda: storage.log(JOB, token, "a line", 10),
    }
    return await calls[name]()


async def snapshot(storage: Storage, client: redis.asyncio.Redis) -> dict[str, Any]:
    """The job hash, its log, and every state index with scores."""
    k = storage.keys
    snap: dict[str, Any] = {
        "hash": await client.hgetall(k.job(JOB)),
        "logs": await client.lrange(k.logs(JOB), 0, -1),
    }
    for state in INDEXED:
        snap[state.value] = await client.zrange(getattr(k, state.value), 0, -1, withscores=True)
    return snap


async def assert_indexed_only_in(storage: Storage, client: redis.asyncio.Redis,
                                 state: State) -> None:
    for other in INDEXED:
        score = await client.zscore(getattr(storage.keys, other.value), JOB)
        assert (score is not None) == (other is state), f"job in {other} index: {score}"


async def last_event(storage: Storage, client: redis.asyncio.Redis) -> dict[bytes, bytes]:
    entries = await client.xrevrange(storage.keys.events, count=1)
    assert entries
    fields: dict[bytes, bytes] = entries[0][1]
    return fields


# -- every (state, transition) pair -----------------------------------------------------

@pytest.mark.parametrize("name", list(TRANSITIONS))
@pytest.mark.parametrize("state", ALL_STATES, ids=_pair_id)
async def test_state_transition_pair(storage: Storage, client: redis.asyncio.Redis,
                                     state: State | None, name: str) -> None:
    t = TRANSITIONS[name]
    legal = state in t.sources
    token = await drive(storage, client, state, due_now=legal and name == "promote",
                        lease_ms=1 if legal and name == "rescue" else LONG_LEASE_MS)
    before = await snapshot(storage, client)
    events_before = await client.xlen(storage.keys.events)

    if legal:
        result = await invoke(storage, name, token)
        after_state = State((await client.hget(storage.keys.job(JOB), "state")).decode())
        assert after_state in t.targets
        expected = EXPECTED_TARGET.get((state, name))
        if expected is None:
            (expected,) = t.targets  # a pair with several targets must be listed
        assert after_state == expected
        await assert_indexed_only_in(storage, client, after_state)
        _check_success_result(name, result)
        if name == "cancel" and after_state is State.ACTIVE:
            assert await client.hget(storage.keys.job(JOB), "cancel_requested") == b"1"
        if name == "renew":  # not a state change: no event
            assert await client.xlen(storage.keys.events) == events_before
        else:
            assert await client.xlen(storage.keys.events) == events_before + 1
            event = await last_event(storage, client)
            assert event[b"event"] == name.encode()
            assert event[b"job"] == JOB.encode()
            assert event[b"state"] == after_state.value.encode()
            assert_declared(name, event=event[b"event"])
        return

    if name in QUEUE_WIDE:
        result = await invoke(storage, name, token)
        if name == "claim":
            assert result.jobs == []
        else:
            assert result == 0
    elif name == "enqueue":
        assert await invoke(storage, name, token) == (False, state)
    elif name == "renew":
        expected = ErrorCode.JOB_NOT_FOUND if state is None else ErrorCode.NOT_IN_STATE
        assert await invoke(storage, name, token) == [expected]
        assert_declared(name, code=expected)
    else:
        refused = JobNotFound if state is None else JobNotInState
        with pytest.raises(refused):
            await invoke(storage, name, token)
        assert_declared(name, code=refused)
    assert await snapshot(storage, client) == before
    assert await client.xlen(storage.keys.events) == events_before


def _check_success_result(name: str, result: Any) -> None:
    if name == "enqueue":
        assert result == (True, State.WAITING)
    elif name == "claim":
        assert [j[b"id"] for j in result.jobs] == [JOB.encode()]
    elif name in ("promote", "rescue"):
        assert result == 1
    elif name == "renew":
        assert result == [1]


# -- fenced writes: the wrong token never commits ----------------------------------------

FENCED = [name for name, t in TRANSITIONS.items() if t.fenced] + list(states.FENCED_WRITES)


@pytest.mark.parametrize("name", FENCED)
@pytest.mark.parametrize("which", ["stale", "unissued"])
async def test_wrong_token_is_refused(storage: Storage, client: redis.asyncio.Redis,
                                      which: str, name: str) -> None:
    # A real stale token: the first attempt was handed back and the job claimed again.
    first = await drive(storage, client, State.ACTIVE)
    await storage.release(JOB, first)
    second = await storage.claim(1, LONG_LEASE_MS, "worker-2")
    current = int(second.jobs[0][b"token"])
    assert current == first + 1
    wrong = first if which == "stale" else current + 1
    before = await snapshot(storage, client)
    events_before = await client.xlen(storage.keys.events)

    if name == "renew":
        assert await invoke(storage, name, wrong) == [ErrorCode.TOKEN_MISMATCH]
    else:
        with pytest.raises(LeaseLost):
            await invoke(storage, name, wrong)
    assert_declared(name, code=ErrorCode.TOKEN_MISMATCH)
    assert await snapshot(storage, client) == before
    assert await client.xlen(storage.keys.events) == events_before


@pytest.mark.parametrize("name", states.FENCED_WRITES)
@pytest.mark.parametrize("state", ALL_STATES, ids=_pair_id)
async def test_fenced_write_in_every_state(storage: Storage, client: redis.asyncio.Redis,
                                           state: State | None, name: str) -> None:
    token = await drive(storage, client, state)
    before = await snapshot(storage, client)
    events_before = await client.xlen(storage.keys.events)
    if state is not State.ACTIVE:
        refused = JobNotFound if state is None else JobNotInState
        with pytest.raises(refused):
            await invoke(storage, name, token)
        assert_declared(name, code=refused)
        assert await snapshot(storage, client) == before
        assert await client.xlen(storage.keys.events) == events_before
        return
    await invoke(storage, name, token)
    after = await snapshot(storage, client)
    assert after["hash"][b"state"] == b"active"
    await assert_indexed_only_in(storage, client, State.ACTIVE)
    if name == "progress":  # a fenced write that announces itself; log is silent
        assert after["hash"][b"progress"] == b'{"pct": 50}'
        assert await client.xlen(storage.keys.events) == events_before + 1
        event = await last_event(storage, client)
        assert (event[b"event"], event[b"state"]) == (b"progress", b"active")
        assert_declared(name, event=event[b"event"])
    else:
        assert after["logs"] == [b"a line"]
        assert await client.xlen(storage.keys.events) == events_before
