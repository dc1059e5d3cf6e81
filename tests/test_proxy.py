"""The fault suite's TCP proxy (faults/proxy.py) against a real redis-server of its own
(TCP, a free port): what a client sees for each network fault, and that the server did
(or did not) run the request."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from faults.proxy import Fault, Proxy
from faults.redis_server import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]

INCR = "return redis.call('INCR', KEYS[1])"


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as s:
        yield s


@pytest.fixture
def direct(server: RedisServer) -> Iterator[redis.Redis]:
    client = server.client()
    yield client
    client.close()


@pytest.fixture
def proxy(server: RedisServer) -> Iterator[Proxy]:
    p = Proxy("127.0.0.1", server.port).start()
    yield p
    p.close()


@pytest.fixture
def key(direct: redis.Redis) -> Iterator[str]:
    name = f"t-proxy-{uuid.uuid4().hex[:8]}"
    yield name
    direct.delete(name)


def no_retry(url: str, **kwargs: object) -> redis.Redis:
    """A client that surfaces the first connection error, whatever redis-py's defaults."""
    return redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **kwargs)


def test_forwards_and_counts(proxy: Proxy, key: str) -> None:
    client = redis.Redis.from_url(proxy.url)
    assert client.set(key, b"v") and client.get(key) == b"v"
    assert proxy.accepted == 1 and proxy.connections == 1
    assert proxy.url == f"redis://127.0.0.1:{proxy.port}/0"
    client.close()


def test_cut_all_resets_every_connection(proxy: Proxy, key: str, direct: redis.Redis) -> None:
    """A client waiting for a reply sees the reset. (An idle connection that was reset is
    replaced silently by redis-py's pool when it is next used.)"""
    a, idle = no_retry(proxy.url), no_retry(proxy.url)
    assert a.ping() and idle.ping()
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            a.blpop([key], timeout=5)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    deadline = time.monotonic() + 5  # until the BLPOP is blocked on the server
    while not any(c.get("cmd") == "blpop" for c in direct.client_list()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    before = time.time()
    assert proxy.cut_all() == 2
    thread.join(5)
    assert len(errors) == 1 and isinstance(errors[0], redis.ConnectionError), errors
    assert idle.get(key) is None  # reconnected by the pool
    assert proxy.cuts == 2
    (fault,) = proxy.faults
    assert fault.kind == "cut" and before <= fault.start == fault.end <= time.time()
    fresh = no_retry(proxy.url)  # new connections go through again
    assert fresh.ping()
    for client in (a, idle, fresh):
        client.close()


def test_reply_dropped_after_the_script_ran(proxy: Proxy, key: str, direct: redis.Redis) -> None:
    """A cut right after the server ran the script: the client sees ConnectionError, the
    server's state shows the script ran once; the next call is not affected."""
    sha = direct.script_load(INCR)
    client = no_retry(proxy.url)
    assert client.evalsha(sha, 1, key) == 1
    proxy.drop_reply_after(sha.encode())
    with pytest.raises(redis.ConnectionError):
        client.evalsha(sha, 1, key)
    assert direct.get(key) == b"2"  # it ran on the server
    assert proxy.dropped == 1 and proxy.cuts == 1 and proxy.pending_drops() == 0
    assert [f.kind for f in proxy.faults] == ["drop_reply"]
    assert client.evalsha(sha, 1, key) == 3
    client.close()


def test_a_retrying_client_runs_the_script_twice(proxy: Proxy, key: str,
                                                direct: redis.Redis) -> None:
    """A client that re-sends on a connection error (redis-py with ``retry_on_error``, or
    the worker's own retry loop) runs a script twice when only its reply was lost: why a
    claim must be safe to replay."""
    sha = direct.script_load(INCR)
    client = redis.Redis.from_url(proxy.url, retry_on_error=[redis.ConnectionError])
    proxy.drop_reply_after(sha.encode())
    assert client.evalsha(sha, 1, key) == 2
    assert proxy.dropped == 1
    client.close()


async def test_dropped_reply_for_an_asyncio_client(proxy: Proxy, key: str, direct: redis.Redis) -> None:
    sha = direct.script_load(INCR)
    client = redis.asyncio.Redis.from_url(proxy.url, retry=redis.asyncio.retry.Retry(NoBackoff(), 0))
    proxy.drop_reply_after(sha.encode(), count=2)
    for _ in range(2):
        with pytest.raises(redis.ConnectionError):
            await client.evalsha(sha, 1, key)
    assert await client.evalsha(sha, 1, key) == 3
    assert proxy.dropped == 2
    await client.aclose()


def test_noscript_keeps_the_drop_armed(proxy: Proxy, key: str, direct: redis.Redis) -> None:
    """EVALSHA of a script the server does not have did not run: the client gets its
    NOSCRIPT on the same connection, loads the script and sends it again, and that run's
    reply is the one lost."""
    source = f"return redis.call('INCR', KEYS[1]) -- {uuid.uuid4().hex}"
    script = no_retry(proxy.url).register_script(source)
    proxy.drop_reply_after(script.sha.encode())
    with pytest.raises(redis.ConnectionError):
        script(keys=[key])  # NOSCRIPT passed through, SCRIPT LOAD, EVALSHA ran: reply lost
    assert direct.get(key) == b"1" and proxy.pending_drops() == 0 and proxy.dropped == 1
    assert [f.kind for f in proxy.faults] == ["drop_reply"] and proxy.cuts == 1


def test_stall_holds_bytes_until_resumed(proxy: Proxy, key: str, direct: redis.Redis) -> None:
    client = redis.Redis.from_url(proxy.url)
    assert client.ping()
    proxy.stall(True)
    assert proxy.stalled
    done = threading.Event()

    def late_set() -> None:
        client.set(key, b"late")
        done.set()

    thread = threading.Thread(target=late_set)
    thread.start()
    assert not done.wait(0.5)
    assert direct.get(key) is None  # not even delivered to the server
    proxy.stall(False)
    assert done.wait(5)
    thread.join()
    assert direct.get(key) == b"late" and proxy.cuts == 0
    (fault,) = proxy.faults
    assert fault.kind == "stall" and fault.end - fault.start >= 0.5
    client.close()


def test_hold_delays_one_request_on_its_connection(proxy: Proxy, key: str, direct: redis.Redis) -> None:
    slow, fast = redis.Redis.from_url(proxy.url), redis.Redis.from_url(proxy.url)
    assert slow.ping() and fast.ping()
    proxy.hold(b"INCRBY", 0.5)
    done: list[int] = []
    thread = threading.Thread(target=lambda: done.append(int(slow.incrby(key, 5))))
    started = time.monotonic()
    thread.start()
    while time.monotonic() - started < 0.3:
        assert fast.ping()  # other connections flow meanwhile
    assert direct.get(key) is None  # not on the server yet
    thread.join(5)
    assert done == [5] and time.monotonic() - started >= 0.5
    (fault,) = proxy.faults
    assert fault.kind == "hold" and fault.end - fault.start >= 0.5
    assert slow.incrby(key, 1) == 6  # count 1: the next one is not held
    slow.close()
    fast.close()


def test_stall_longer_than_a_socket_timeout(proxy: Proxy) -> None:
    client = no_retry(proxy.url, socket_timeout=0.3)
    assert client.ping()
    proxy.stall(True)
    with pytest.raises(redis.TimeoutError):
        client.ping()
    proxy.stall(False)
    client.close()


def test_refuse_new_connections(proxy: Proxy) -> None:
    old = no_retry(proxy.url)
    assert old.ping()
    proxy.refuse(True)
    new = no_retry(proxy.url, socket_connect_timeout=1)
    with pytest.raises(redis.ConnectionError):
        new.ping()
    assert old.ping()  # open connections are untouched
    proxy.refuse(False)
    assert new.ping()
    assert [f.kind for f in proxy.faults] == ["refuse"]
    old.close()
    new.close()


async def test_forwards_while_the_test_loop_is_blocked(proxy: Proxy, key: str) -> None:
    """The proxy has its own thread and loop: a sync call from a coroutine (which blocks
    this loop) still goes through."""
    client = redis.Redis.from_url(proxy.url)
    assert client.set(key, b"x")  # blocks the test's loop for the round trip
    proxy.cut_all()
    assert client.get(key) == b"x"  # redis-py reconnected
    client.close()


def test_server_down_resets_clients() -> None:
    seen: list[Fault] = []
    with RedisServer() as server:
        proxy = Proxy("127.0.0.1", server.port, on_fault=seen.append).start()
        client = no_retry(proxy.url)
        assert client.ping()
        server.kill()
        with pytest.raises(redis.ConnectionError):
            client.ping()
        with pytest.raises(redis.ConnectionError):
            no_retry(proxy.url).ping()  # accepted, then reset: no upstream
        server.start()
        assert client.ping()
        proxy.stall(True)
        proxy.close()  # ends the open stall: on_fault sees it with its end
        client.close()
    assert [f.kind for f in seen] == ["stall"] and seen[0].end >= seen[0].start
