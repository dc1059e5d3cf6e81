"""A TCP proxy between Redis clients and a server, for network faults: cut every
connection (the clients see a reset), stall all traffic while keeping connections open,
refuse new connections, let one request through and swallow its reply (a cut right
after a script ran on the server), or hold one request back for a while.

It runs in a thread of its own with its own asyncio loop, so it works from sync code and
keeps forwarding while a test's event loop is busy. Every method is called from other
threads and waits until the proxy's loop has applied it. Each fault is kept, with its
start and end (wall clock, like the ledger), in :attr:`Proxy.faults` and passed to the
``on_fault`` callback, so the checker can tie a lost lease to the fault that caused it::

    proxy = Proxy("127.0.0.1", 6379).start()
    client = redis.Redis.from_url(proxy.url)
    proxy.drop_reply_after(b"EVALSHA")  # the next EVALSHA runs, its reply is lost
    proxy.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Fault", "Proxy"]

#: How long a connection whose reply is being swallowed waits for the server to answer
#: (a request inside MULTI, or a server that went down) before it is cut anyway.
DROP_TIMEOUT = 5.0
CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault the proxy applied: ``kind`` is ``cut`` (every connection reset),
    ``drop_reply`` (one reply swallowed, then that connection reset), ``stall``, ``refuse``
    or ``hold`` (one request held back); ``start == end`` for the instantaneous ones."""

    kind: str
    start: float
    end: float
    detail: str = ""


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    #: The reply to a request is being swallowed: (marker the server will echo, what matched).
    doomed: tuple[bytes, bytes] | None = None
    swallowed: bytearray = field(default_factory=bytearray)
    #: Set when a doomed request turned out not to have run (NOSCRIPT): forwarding resumes.
    spared: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False


class Proxy:
    """``Proxy(host, port).start()`` listens on 127.0.0.1, a free port, and forwards each
    connection to ``host:port``. ``on_fault`` is called (from the proxy's thread) with
    every :class:`Fault` once it ends."""

    def __init__(self, target_host: str, target_port: int, *,
                 on_fault: Callable[[Fault], None] | None = None, name: str = "proxy") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.on_fault = on_fault
        self.name = name
        self.port = 0
        #: Counters: connections accepted, connections reset by a fault (cut_all and
        #: drop_reply_after), replies swallowed by drop_reply_after.
        self.accepted = 0
        self.cuts = 0
        self.dropped = 0
        self.faults: list[Fault] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[_Conn] = set()
        self._flowing: asyncio.Event | None = None
        self._stalled_since: float | None = None
        self._refusing_since: float | None = None
        self._drops: list[list[Any]] = []  #: [pattern, remaining]
        self._holds: list[list[Any]] = []  #: [pattern, seconds, remaining]
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- life --------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Proxy:
        self._thread = threading.Thread(target=self._main, name=f"faults-{self.name}", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise RuntimeError(f"proxy did not start: {self._error!r}")
        if not self.port:
            raise RuntimeError("proxy did not start within 10 s")
        return self

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)  # this thread's own
        self._loop = loop
        try:
            loop.run_until_complete(self._listen())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()

    async def _listen(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port or 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        """End open faults, reset every connection, stop listening and the thread."""
        if self._loop is None or self._thread is None or not self._thread.is_alive():
            return
        self._run(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _close(self) -> None:
        self._end_stall()
        self._end_refuse()
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            self._reset(conn)

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        """Run ``coro`` on the proxy's loop and wait for its result."""
        assert self._loop is not None, "start() the proxy first"
        if threading.current_thread() is self._thread:
            raise RuntimeError("proxy methods are called from other threads")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # -- faults ------------------------------------------------------------------------------
    def cut_all(self) -> int:
        """Reset every current connection (RST): clients see ConnectionError. Returns how
        many were cut."""
        async def cut() -> int:
            n = 0
            for conn in list(self._conns):
                if not conn.closed:
                    self._reset(conn)
                    n += 1
            self.cuts += n
            now = time.time()
            self._record(Fault("cut", now, now, f"{n} connections"))
            return n
        return int(self._run(cut()))

    def stall(self, on: bool = True) -> None:
        """Stop (``True``) or resume (``False``) forwarding bytes both ways; connections
        stay open, new ones are accepted and stall too. What was sent meanwhile is
        delivered on resume, as TCP would after a network partition heals."""
        async def apply() -> None:
            assert self._flowing is not None
            if on and self._stalled_since is None:
                self._stalled_since = time.time()
                self._flowing.clear()
            elif not on:
                self._end_stall()
        self._run(apply())

    def refuse(self, on: bool = True) -> None:
        """Stop (``True``) or resume (``False``) listening: new connections are refused
        (ECONNREFUSED); current ones are untouched."""
        async def apply() -> None:
            if on and self._refusing_since is None:
                self._refusing_since = time.time()
                if self._server is not None:
                    self._server.close()
                    await self._server.wait_closed()
                    self._server = None
            elif not on and self._refusing_since is not None:
                self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
                self._end_refuse()
        self._run(apply())

    def drop_reply_after(self, pattern: bytes, count: int = 1) -> None:
        """Arm a fault: each of the next ``count`` client requests containing ``pattern``
        (e.g. a script's SHA) is forwarded to the server, which runs it; its reply (and
        anything the connection had in flight) is swallowed and the connection reset. The
        proxy knows the server ran it because it sends an ``ECHO`` of its own right behind
        it on the same connection and waits for that reply (Redis answers in order). A
        ``NOSCRIPT`` reply means the script did not run: it reaches the client, the
        connection stays, and the fault stays armed for the re-send after SCRIPT LOAD."""
        if not pattern or count < 1:
            raise ValueError("drop_reply_after needs a non-empty pattern and count >= 1")

        async def arm() -> None:
            self._drops.append([bytes(pattern), count])
        self._run(arm())

    def hold(self, pattern: bytes, seconds: float, count: int = 1) -> None:
        """Arm a fault: each of the next ``count`` client requests containing ``pattern`` is
        held ``seconds`` before it is forwarded (with whatever follows it on that
        connection; other connections flow): one slow path, e.g. to decide which of two
        requests a process sent at the same moment reaches the server first."""
        if not pattern or count < 1 or seconds < 0:
            raise ValueError("hold needs a non-empty pattern, seconds >= 0 and count >= 1")

        async def arm() -> None:
            self._holds.append([bytes(pattern), seconds, count])
        self._run(arm())

    def pending_drops(self) -> int:
        """Replies still to be swallowed by armed drop_reply_after faults."""
        return sum(int(d[1]) for d in list(self._drops))  # a copy: the proxy thread edits it

    def disarm(self) -> None:
        """Forget every armed drop_reply_after and hold."""
        async def clear() -> None:
            self._drops.clear()
            self._holds.clear()
        self._run(clear())

    @property
    def connections(self) -> int:
        """Connections open now."""
        return sum(1 for c in list(self._conns) if not c.closed)

    @property
    def stalled(self) -> bool:
        return self._stalled_since is not None

    # -- internals (the proxy's loop) -----------------------------------------------------------
    def _record(self, fault: Fault) -> None:
        self.faults.append(fault)
        if self.on_fault is not None:
            self.on_fault(fault)

    def _end_stall(self) -> None:
        if self._stalled_since is not None:
            assert self._flowing is not None
            self._record(Fault("stall", self._stalled_since, time.time()))
            self._stalled_since = None
            self._flowing.set()

    def _end_refuse(self) -> None:
        if self._refusing_since is not None:
            self._record(Fault("refuse", self._refusing_since, time.time()))
            self._refusing_since = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        conn = _Conn(writer)
        self._conns.add(conn)
        try:
            sreader, swriter = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            self._reset(conn)  # the server is down: the client sees its connection reset
            return
        conn.server = swriter
        if conn.closed:  # cut while connecting
            self._reset(conn)
            return
        conn.tasks = [asyncio.create_task(self._upstream(conn, reader, swriter)),
                      asyncio.create_task(self._downstream(conn, sreader, writer))]

    async def _upstream(self, conn: _Conn, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        """Client -> server. A request that matches an armed drop is the last one forwarded."""
        assert self._flowing is not None
        tail = b""  # the end of what came before, for a pattern split across reads
        try:
            while not conn.closed:
                data = await reader.read(CHUNK)
                if not data:
                    break
                await self._flowing.wait()
                held = next((h for h in self._holds if h[2] > 0 and _ends_in(tail, data, h[0])), None)
                if held is not None:
                    held[2] -= 1
                    self._holds = [h for h in self._holds if h[2] > 0]
                    start = time.time()
                    await asyncio.sleep(held[1])
                    self._record(Fault("hold", start, time.time(),
                                       f"{held[0].decode('ascii', 'replace')[:16]} held {held[1]:g}s"))
                if conn.closed:
                    return
                matched = next((d for d in self._drops if d[1] > 0 and _ends_in(tail, data, d[0])),
                               None)
                tail = (tail + data)[-256:]
                if matched is None:
                    writer.write(data)
                    await writer.drain()
                    continue
                matched[1] -= 1
                self._drops = [d for d in self._drops if d[1] > 0]
                marker = f"faults-proxy-{uuid.uuid4().hex}".encode()
                conn.doomed = (marker, matched[0])
                conn.spared.clear()
                echo = b"*2\r\n$4\r\nECHO\r\n$%d\r\n%s\r\n" % (len(marker), marker)
                writer.write(data + echo)
                await writer.drain()
                # downstream resets the connection once the echo is back, or spares it
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(conn.spared.wait(), DROP_TIMEOUT)
                if conn.closed:
                    return
                if not conn.spared.is_set():
                    self._drop_done(conn, timed_out=True)
                    return
        except (OSError, asyncio.IncompleteReadError):
            pass
        self._reset(conn)

    async def _downstream(self, conn: _Conn, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        """Server -> client; swallowed from the moment a request was doomed."""
        assert self._flowing is not None
        try:
            while not conn.closed:
                data = await reader.read(CHUNK)
                if not data:
                    break
                await self._flowing.wait()
                if conn.closed:
                    return
                if conn.doomed is not None:
                    conn.swallowed += data
                    marker = conn.doomed[0]
                    if marker not in conn.swallowed:
                        continue
                    if b"-NOSCRIPT" not in conn.swallowed:
                        self._drop_done(conn, timed_out=False)
                        return
                    # It did not run: the client gets its NOSCRIPT (our echo's reply, the
                    # last one, cut off), loads the script and sends it again, still armed.
                    echo = b"$%d\r\n%s\r\n" % (len(marker), marker)
                    data = bytes(conn.swallowed[:conn.swallowed.rindex(echo)])
                    self._spare(conn)
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        self._reset(conn)

    def _spare(self, conn: _Conn) -> None:
        assert conn.doomed is not None
        self._drops.append([conn.doomed[1], 1])  # still armed for the re-send
        conn.doomed = None
        conn.swallowed.clear()
        conn.spared.set()

    def _drop_done(self, conn: _Conn, *, timed_out: bool) -> None:
        assert conn.doomed is not None
        _, pattern = conn.doomed
        ran = not timed_out
        if ran:
            self.dropped += 1
        else:  # no reply in time (inside MULTI? server down?): cut, and keep it armed
            self._drops.append([pattern, 1])
        self.cuts += 1
        self._reset(conn)
        now = time.time()
        what = pattern.decode("ascii", "replace")[:16]
        self._record(Fault("drop_reply", now, now,
                           f"after {what}" + ("" if ran else " (did not run; re-armed)")))

    def _reset(self, conn: _Conn) -> None:
        """Close both sides at once; the client side with an RST (SO_LINGER 0), so the
        client sees 'connection reset', not an orderly end of stream."""
        if conn.closed:
            self._conns.discard(conn)
            return
        conn.closed = True
        self._conns.discard(conn)
        for writer in (conn.client, conn.server):
            if writer is None:
                continue
            with contextlib.suppress(OSError, AttributeError):
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        current = asyncio.current_task()
        for task in conn.tasks:
            if task is not current:
                task.cancel()


def _ends_in(before: bytes, data: bytes, pattern: bytes) -> bool:
    """``pattern`` occurs in ``before + data`` and ends inside ``data`` (so a request
    forwarded earlier never matches again)."""
    keep = len(pattern) - 1
    return pattern in ((before[-keep:] if keep else b"") + data)
