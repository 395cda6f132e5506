"""Large results stream through the proxy in constant memory, with backpressure.

The proxy runs as a real subprocess so its resident memory can be sampled
while a client pulls millions of rows fast, or reads slowly.
"""
from __future__ import annotations

import socket
import threading
import time

import psutil
import psycopg
import pytest

from .pgfixture import client_dsn
from .proxyproc import ProxyProcess, env_for, write_config
from .pgfixture import PASSWORDS
from .rawpg import RawClient
from proxy.wire import StreamWalker
from proxy.wire._fields import cstr, frame


class RssSampler:
    """Samples a process's RSS in a thread; ``peak`` is the maximum seen."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.baseline = self.proc.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def growth_mb(self) -> float:
        self._stop.set()
        self._thread.join()
        return (self.peak - self.baseline) / 2**20


@pytest.fixture(scope="module")
def proxy_proc(tmp_path_factory, pg):
    p = ProxyProcess(write_config(tmp_path_factory.mktemp("stream") / "pgveil.yaml", pg), env_for(pg))
    with psycopg.connect(client_dsn(p.port)) as conn:  # warm up: imports, first session
        conn.execute("SELECT 1")
    yield p
    p.stop()


def test_million_row_select_through_a_driver(proxy_proc):
    rows = 1_000_000
    sampler = RssSampler(proxy_proc.proc.pid)
    count = 0
    total = 0
    with psycopg.connect(client_dsn(proxy_proc.port)) as conn, conn.cursor() as cur:
        for row in cur.stream(f"SELECT g, repeat('x', 40) FROM generate_series(1, {rows}) g"):
            count += 1
            total += row[0]
    growth = sampler.growth_mb()
    assert count == rows and total == rows * (rows + 1) // 2
    assert growth < 40, f"proxy memory grew by {growth:.1f} MB while streaming {rows} rows"


def test_five_million_row_select_in_flat_memory(proxy_proc):
    rows = 5_000_000
    c = RawClient(proxy_proc.port, timeout=60)
    try:
        c.login("root", PASSWORDS["root"])
        sampler = RssSampler(proxy_proc.proc.pid)
        c.send(frame(b"Q", cstr(f"SELECT g, repeat('z', 20) FROM generate_series(1, {rows}) g")))
        walker = StreamWalker(b"Z")
        data_rows = 0
        done = False
        while not done:
            chunk = c.sock.recv(1 << 20)
            assert chunk, "proxy closed the connection mid-stream"
            for tag, status in walker.feed(chunk):
                if tag == b"D":
                    data_rows += 1
                elif tag == b"E":
                    pytest.fail("error while streaming")
                elif tag == b"Z" and status is not None:
                    done = True
        growth = sampler.growth_mb()
    finally:
        c.close()
    assert data_rows == rows
    assert growth < 40, f"proxy memory grew by {growth:.1f} MB while streaming {rows} rows"


def test_copy_out_of_a_million_rows(proxy_proc):
    sampler = RssSampler(proxy_proc.proc.pid)
    size = 0
    lines = 0
    with psycopg.connect(client_dsn(proxy_proc.port)) as conn, conn.cursor() as cur:
        with cur.copy("COPY (SELECT g, md5(g::text) FROM generate_series(1, 1000000) g) TO STDOUT") as copy:
            for chunk in copy:
                size += len(chunk)
                lines += bytes(chunk).count(b"\n")
    assert lines == 1_000_000 and size > 38_000_000
    assert sampler.growth_mb() < 40


def test_slow_client_does_not_grow_proxy_buffers(proxy_proc):
    """A client that stops reading makes the proxy stop reading from the backend."""
    c = RawClient(proxy_proc.port)
    try:
        c.login("root", PASSWORDS["root"])
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sampler = RssSampler(proxy_proc.proc.pid)
        c.send(frame(b"Q", cstr("SELECT g, repeat('y', 200) FROM generate_series(1, 3000000) g")))
        time.sleep(3)  # the backend would produce ~700 MB in this time if nothing pushed back
        growth = sampler.growth_mb()
        assert growth < 20, f"proxy buffered {growth:.1f} MB for a client that is not reading"
        # Now read a little: data still flows, in order.
        c.sock.settimeout(5)
        first = c.sock.recv(65536)
        assert first[:1] == b"T"  # RowDescription comes first
    finally:
        c.close()
