"""A fault-injecting TCP proxy for tests: put it between clients and a server, then break the line.

``FaultProxy`` listens on 127.0.0.1:<free port> and forwards every connection to one upstream
``host:port``, byte for byte (gRPC's HTTP/2 included: it is only TCP). Its event loop runs on a
thread of its own, so a synchronous test drives it with plain calls:

- ``refuse()``: stop listening; a new connection is refused (ECONNREFUSED). Open ones live on.
- ``cut()``: reset every open connection now (both sides see a reset mid-stream).
- ``blackhole()``: accept new connections but never answer them, and stop forwarding on open ones
  (what a dead host behind a live load balancer looks like: the client waits for its deadline).
- ``delay(seconds)``: hold each chunk that long before forwarding it, in both directions
  (``answers_only=True``: only the server's, so a server that serves one connection at a time is
  not held waiting for a delayed request: a far server's latency without its queueing).
- ``reject()``: accept each new connection and reset it at once (ECONNRESET, as a load balancer
  with no live backend answers); unlike a refusal, each attempt is counted (``stats.rejected``).
- ``down()``: ``refuse()`` and ``cut()``: the server is gone, as far as any client can tell.
- ``restore()``: listen again on the same port and forward normally, without delay or rejection.

The upstream server keeps all its state through any of these, so a "down" made here is an outage
without amnesia, unlike a restart of an in-memory emulator. ``stats`` counts connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Self

CHUNK = 65536


@dataclasses.dataclass
class ProxyStats:
    """What the proxy has seen so far."""

    accepted: int = 0
    """Connections accepted (blackholed ones included)."""
    forwarded: int = 0
    """Connections that reached the upstream server."""
    cut: int = 0
    """Connections reset by ``cut()``."""
    rejected: int = 0
    """Connections accepted and reset at once by ``reject()``."""


class FaultProxy:
    """A TCP proxy to ``upstream`` (``host:port``) whose faults a test switches on and off."""

    def __init__(self, upstream: str, *, timeout: float = 10.0) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host or "127.0.0.1", int(port))
        self.port = _free_port()
        self.stats = ProxyStats()
        self._timeout = timeout
        self._delay = 0.0
        self._answers_only = False
        self._blackholed = False
        self._rejecting = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``: what a client is given instead of the upstream's address."""
        return f"127.0.0.1:{self.port}"

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Self:
        self._thread.start()
        self._call(self._listen)
        return self

    def stop(self) -> None:
        """Close the listener and every connection, then stop the loop (bounded)."""
        if self._thread.is_alive():
            self._call(self._close_all)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(self._timeout)
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- faults ---------------------------------------------------------------------------------

    def refuse(self) -> None:
        """Stop listening: new connections are refused; open ones are left alone."""
        self._call(self._unlisten)

    def cut(self) -> None:
        """Reset every open connection now."""
        self._call(self._reset_all)

    def blackhole(self) -> None:
        """Accept but never answer; open connections stop forwarding (their bytes are dropped)."""
        self._blackholed = True

    def reject(self) -> None:
        """Accept every new connection and reset it before reading a byte; open ones are left alone."""
        self._rejecting = True
        self._call(self._listen)

    def delay(self, seconds: float, *, answers_only: bool = False) -> None:
        """Hold every chunk (or only the server's) ``seconds`` before forwarding it (0 to stop delaying)."""
        self._delay, self._answers_only = seconds, answers_only

    def down(self) -> None:
        """Refuse new connections and reset the open ones: to a client the server is gone."""
        self.refuse()
        self.cut()

    def restore(self) -> None:
        """Listen again (same port) and forward everything at once."""
        self._blackholed, self._rejecting, self._delay = False, False, 0.0
        self._call(self._listen)

    # ---- the loop's side ------------------------------------------------------------------------

    def _call(self, fn: Callable[[], Any]) -> None:
        """Run a coroutine function on the proxy's loop and wait for it (bounded)."""
        future = asyncio.run_coroutine_threadsafe(fn(), self._loop)
        future.result(self._timeout)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    async def _unlisten(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _reset_all(self) -> None:
        for writer in list(self._writers):
            _reset(writer)
            self.stats.cut += 1
        self._writers.clear()

    async def _close_all(self) -> None:
        await self._unlisten()
        await self._reset_all()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.accepted += 1
        self._writers.add(writer)
        try:
            if self._rejecting:
                self.stats.rejected += 1
                _reset(writer)
                return
            if self._blackholed:
                await self._swallow(reader)
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                _reset(writer)
                return
            self.stats.forwarded += 1
            self._writers.add(up_writer)
            await asyncio.gather(self._pump(reader, up_writer, answers=False),
                                 self._pump(up_reader, writer, answers=True))
        except asyncio.CancelledError:  # stop() with the connection open: end quietly (Python 3.11's stream
            pass  # callback would log the cancelled handler as "Exception in callback ...")
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _swallow(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(CHUNK):
                pass

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, answers: bool) -> None:
        """Copy one direction (``answers``: the server's) until EOF or a reset; chunks are dropped while
        blackholed."""
        try:
            while chunk := await reader.read(CHUNK):
                if self._delay and (answers or not self._answers_only):
                    await asyncio.sleep(self._delay)
                if self._blackholed:
                    continue
                writer.write(chunk)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            _reset(writer)
        finally:
            self._writers.discard(writer)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a crashed host's kernel or a middlebox would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def fault_proxy(upstream: str) -> Iterator[FaultProxy]:
    """A started ``FaultProxy`` to ``upstream``, stopped on exit."""
    with FaultProxy(upstream) as proxy:
        yield proxy
