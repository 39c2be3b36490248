"""The fault-injecting proxy (``tests/support/proxy.py``) does each fault it claims, and no more.

Checks: bytes pass both ways; ``refuse`` refuses new connections; ``reject`` accepts and resets
each new one, counting it; ``cut`` resets an open one mid-stream; ``blackhole`` accepts and never
answers; ``delay`` holds each chunk (or only the server's); ``restore`` listens again on the same
port. Then with the real Pub/Sub emulator behind it: while ``down``, the client reports it
unreachable; after ``restore`` a message published before the outage is still there (an outage
without amnesia).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from batchctl.core.errors import Unreachable
from batchctl.core.pubsub import PubSub, Received, SubscriptionSpec
from batchctl.core.settings import Settings
from tests.support.proxy import FaultProxy, fault_proxy


@pytest.fixture
def echo() -> Iterator[str]:
    """A TCP echo server on 127.0.0.1: the simplest upstream whose answers can be checked."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stopping = threading.Event()

    def serve_one(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # the proxy resets connections on purpose
            while data := conn.recv(4096):
                conn.sendall(data)

    def accept() -> None:
        while not stopping.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    stopping.set()
    thread.join(5)
    server.close()


def _connect(proxy: FaultProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=2)


def test_bytes_pass_both_ways(echo: str) -> None:
    """With no fault, what goes in comes back out."""
    with fault_proxy(echo) as proxy, _connect(proxy) as conn:
        conn.sendall(b"hello")
        assert conn.recv(100) == b"hello"
        assert proxy.stats.forwarded == 1


def test_refuse_then_restore_on_the_same_port(echo: str) -> None:
    """``refuse`` makes a new connection fail with ECONNREFUSED; ``restore`` listens on the same port again."""
    with fault_proxy(echo) as proxy:
        proxy.refuse()
        with pytest.raises(ConnectionRefusedError):
            _connect(proxy)
        proxy.restore()
        with _connect(proxy) as conn:
            conn.sendall(b"back")
            assert conn.recv(100) == b"back"


def test_reject_resets_each_new_connection_and_counts_it(echo: str) -> None:
    """``reject`` accepts a connection and resets it before any answer; ``restore`` forwards again."""
    with fault_proxy(echo) as proxy:
        proxy.reject()
        for _ in range(2):
            # a reset, not an orderly close (that would read b""); seen by recv, or by connect itself when
            # it comes first (a socket with a timeout connects without blocking, then reads SO_ERROR)
            with pytest.raises(ConnectionResetError), _connect(proxy) as conn:
                conn.recv(100)
        assert proxy.stats.rejected == 2 and proxy.stats.forwarded == 0
        proxy.restore()
        with _connect(proxy) as conn:
            conn.sendall(b"back")
            assert conn.recv(100) == b"back"


def test_stop_with_a_connection_open_logs_nothing(echo: str, caplog: pytest.LogCaptureFixture) -> None:
    """``stop`` ends an open connection's handler quietly (Python 3.11's stream callback logs a cancelled one)."""
    proxy = FaultProxy(echo).start()
    with _connect(proxy) as conn:
        conn.sendall(b"open")
        assert conn.recv(100) == b"open"
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            proxy.stop()
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


def test_cut_resets_an_open_connection(echo: str) -> None:
    """``cut`` ends a connection mid-stream with a reset the client sees."""
    with fault_proxy(echo) as proxy, _connect(proxy) as conn:
        conn.sendall(b"one")
        assert conn.recv(100) == b"one"
        proxy.cut()
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            conn.sendall(b"two")
            if conn.recv(100) == b"":
                raise ConnectionResetError("closed")
        assert proxy.stats.cut >= 1


def test_blackhole_accepts_and_never_answers(echo: str) -> None:
    """A blackholed proxy accepts the connection, then the client waits until its own deadline."""
    with fault_proxy(echo) as proxy:
        proxy.blackhole()
        with _connect(proxy) as conn:
            conn.settimeout(0.5)
            conn.sendall(b"anyone?")
            with pytest.raises(TimeoutError):
                conn.recv(100)
        assert proxy.stats.accepted == 1 and proxy.stats.forwarded == 0


def test_delay_holds_each_chunk(echo: str) -> None:
    """``delay(0.3)`` makes an echo take at least 0.3 s each way; ``restore`` removes it."""
    with fault_proxy(echo) as proxy, _connect(proxy) as conn:
        proxy.delay(0.3)
        began = time.monotonic()
        conn.sendall(b"slow")
        assert conn.recv(100) == b"slow"
        assert time.monotonic() - began >= 0.6
        proxy.restore()
        began = time.monotonic()
        conn.sendall(b"fast")
        assert conn.recv(100) == b"fast"
        assert time.monotonic() - began < 0.3


def test_delay_of_answers_only_holds_only_the_server_side(echo: str) -> None:
    """``delay(0.5, answers_only=True)``: the echo comes back after 0.5 s, not 1 s (the request went at once)."""
    with fault_proxy(echo) as proxy, _connect(proxy) as conn:
        proxy.delay(0.5, answers_only=True)
        began = time.monotonic()
        conn.sendall(b"half")
        assert conn.recv(100) == b"half"
        assert 0.5 <= time.monotonic() - began < 0.95


def test_pubsub_down_through_the_proxy_keeps_its_messages(
    settings: Settings, emulator_host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pub/Sub taken down at the proxy is unreachable to a client, and after ``restore`` keeps what it had."""
    with fault_proxy(emulator_host) as proxy:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", proxy.address)  # the client sets it too: restore it after
        proxied = Settings.from_env({**settings.environ, "PUBSUB_EMULATOR_HOST": proxy.address})
        client = PubSub(proxied)
        try:
            topic, sub = f"{proxied.prefix}-proxy", f"{proxied.prefix}-proxy-sub"
            client.create_topic(topic, exist_ok=False)
            client.create_subscription(sub, topic, SubscriptionSpec(), exist_ok=False)
            client.confirm(client.publish(topic, b"kept"), topic=topic)
            proxy.down()
            with pytest.raises(Unreachable):
                client.check_reachable()
            proxy.restore()
            assert [message.data for message in _pull_when_back(client, sub)] == [b"kept"]
        finally:
            client.close()


def _pull_when_back(client: PubSub, sub: str, timeout: float = 20.0) -> list[Received]:
    """Pull once the channel has reconnected (gRPC backs off after an outage), within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.pull(sub, max_messages=10, timeout_s=5)
        except Unreachable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
