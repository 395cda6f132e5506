"""The proxy's Python path per pgbench transaction, without sockets.

    python -m bench.relaypath [--n 20000] [--profile MODE/TARGET]

Drives ``proxy.server.ClientConnection`` / ``BackendProtocol`` with fake
transports: per transaction, the bytes pgbench -S sends in each mode go in as
one client chunk and a canned backend answer (the one PostgreSQL gives) as one
backend chunk, exactly as the socket callbacks would see them. Targets:
``pgveil`` (an unrestricted user) and ``pgveil-governed`` (the policies of
``bench.pgbench``'s governed target on a hand-built pgbench catalog), each also
with the audit on. Prints µs per transaction (median of 5 runs). This is the
user CPU the live benchmark's ``proxy cpu us/txn`` column measures, minus the
event loop and the system calls.
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import random
import statistics
import sys
import time

from proxy.wire import backend as be
from proxy.wire import frontend as fe

DB = "pgbench"
USER = "bench"
SQL_PREPARED = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;"
SQL_SIMPLE = "SELECT abalance FROM pgbench_accounts WHERE aid = %d;"


def _config(governed: bool, audit: bool) -> str:
    from .servers import GOVERNED_POLICIES

    text = f"""
listen: {{host: 127.0.0.1, port: 0}}
backend: {{dsn: "postgresql://svc@127.0.0.1:5432/{DB}", password_env: PGVEIL_RELAYPATH_PW}}
keys: {{master_key_env: PGVEIL_RELAYPATH_KEY}}
users:
  {USER}:
    password_env: PGVEIL_RELAYPATH_PW
""" + ("" if governed else "    unrestricted: true\n")
    if governed:
        text += GOVERNED_POLICIES % {"user": USER}
    return text


def _catalog():
    from rewrite.catalog import Catalog, Column, Relation

    i4 = Column
    rels = [
        Relation(16001, "public", "pgbench_accounts", "table",
                 (i4("aid", "integer", "int4"), i4("bid", "integer", "int4"), i4("abalance", "integer", "int4"),
                  Column("filler", "character(84)", "bpchar"))),
        Relation(16002, "public", "pgbench_branches", "table",
                 (i4("bid", "integer", "int4"), i4("bbalance", "integer", "int4"), Column("filler", "character(88)", "bpchar"))),
        Relation(16003, "public", "pgbench_tellers", "table",
                 (i4("tid", "integer", "int4"), i4("bid", "integer", "int4"), i4("tbalance", "integer", "int4"),
                  Column("filler", "character(84)", "bpchar"))),
        Relation(16004, "public", "pgbench_history", "table",
                 (i4("tid", "integer", "int4"), i4("bid", "integer", "int4"), i4("aid", "integer", "int4"),
                  i4("delta", "integer", "int4"), Column("mtime", "timestamp without time zone", "timestamp"),
                  Column("filler", "character(22)", "bpchar"))),
    ]
    ops = {(op, "int4", "int4"): True for op in ("=", "<", ">", "<=", ">=", "<>")}
    return Catalog.build(DB, rels, operators=ops)


class _Transport:
    def __init__(self) -> None:
        self.out = []

    def write(self, data) -> None:
        self.out.append(data)

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 50000) if name == "peername" else default

    def set_write_buffer_limits(self, *a) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _frames(*messages) -> bytes:
    return b"".join(m.encode() for m in messages)


def _answer(parse: bool, bind: bool, describe: bool, row: bytes = b"4711") -> bytes:
    parts = []
    if parse:
        parts.append(be.ParseComplete().encode() if hasattr(be, "ParseComplete") else b"1\x00\x00\x00\x04")
    if bind:
        parts.append(b"2\x00\x00\x00\x04")
    if describe:
        parts.append(be.RowDescription((be.FieldDescription("abalance", 0, 0, 23, 4, -1, 0),)).encode())
    parts.append(be.DataRow((row,)).encode())
    parts.append(be.CommandComplete("SELECT 1").encode())
    parts.append(be.ReadyForQuery("I").encode())
    return b"".join(parts)


_SEED = [7]


def _client_chunks(mode: str, n: int) -> tuple[list[bytes], bytes]:
    _SEED[0] += 1  # new literals every run: the verdict caches are process-wide, as in the server
    rnd = random.Random(_SEED[0])
    aids = [rnd.randint(1, 1_000_000) for _ in range(n)]
    if mode == "simple":
        return [fe.Query(SQL_SIMPLE % a).encode() for a in aids], _answer(False, False, True)
    if mode == "extended":
        return [_frames(fe.Parse("", SQL_PREPARED, ()), fe.Bind("", "", (0,), (str(a).encode(),), (0,)),
                        fe.Describe("P", ""), fe.Execute("", 0), fe.Sync()) for a in aids], _answer(True, True, True)
    return [_frames(fe.Bind("", "P0_1", (0,), (str(a).encode(),), (0,)), fe.Describe("P", ""), fe.Execute("", 0),
                    fe.Sync()) for a in aids], _answer(False, True, True)


class _Proxy:
    closing = False

    def __init__(self, session_settings, settings) -> None:
        self.session_settings = session_settings
        self.settings = settings
        self.connections = set()

    def new_cancel_key(self, conn):
        return 1234, b"\x00\x00\x00\x01"

    def forget(self, conn):
        pass

    def cancel_backend(self, session):
        pass


def _connection(governed: bool, audit: bool, mode: str):
    """A ClientConnection in READY with a fake backend, as after login."""
    from proxy.config import parse_config
    from proxy.policy_state import PolicyHolder, PolicyState
    from proxy.runner import user_verifiers
    from proxy.server import BackendProtocol, ClientConnection
    from proxy.session import SessionSettings
    from proxy.session import events as ev

    os.environ.setdefault("PGVEIL_RELAYPATH_PW", "pw")
    os.environ.setdefault("PGVEIL_RELAYPATH_KEY", "k" * 32)
    config = parse_config(_config(governed, audit))
    verifiers = user_verifiers(config)
    holder = PolicyHolder(PolicyState.build(config, verifiers, _catalog()))
    records = []
    session_settings = SessionSettings(database=DB, verifier_for=verifiers.get, holder=holder,
                                       audit=records.append if audit else None)

    class Settings:
        max_connections = 100
        auth_timeout = 30.0

    conn = ClientConnection(_Proxy(session_settings, Settings))
    conn.connection_made(_Transport())
    s = conn.session
    # what a successful login leaves behind (machine._auth_step), without SCRAM
    s.user, s.database = USER, DB
    s._client_buf.max_message_size = s.settings.max_message_size
    governed_now = s._govern_if_needed()
    assert governed_now is governed, governed_now
    s._start_audit(governed_now)
    from proxy.session.states import State

    s.state = State.CONNECTING
    backend = BackendProtocol.__new__(BackendProtocol)
    backend.handshake = None
    backend.transport = _Transport()
    backend.client = None
    backend._relay = None
    backend._client_write = None
    backend._after_write = None
    backend._ssl_answer = None
    conn.backend = backend
    conn._apply(s.handle(ev.BackendConnected([], be.BackendKeyData(99, b"\x00\x00\x00\x07"), [])))
    conn._backend_write = backend.transport.write
    backend.relay_to(conn)
    if conn._auth_timer:
        conn._auth_timer.cancel()
    if mode == "prepared":  # pgbench -M prepared: one Parse per connection first
        conn.data_received(_frames(fe.Parse("P0_1", SQL_PREPARED, ()), fe.Sync()))
        backend.data_received(b"1\x00\x00\x00\x04" + be.ReadyForQuery("I").encode())
    return conn, backend, records


def run(mode: str, target: str, n: int, profile: bool = False) -> float:
    governed = target.startswith("pgveil-governed")
    audit = target.endswith("+audit")
    conn, backend, records = _connection(governed, audit, mode)
    chunks, answer = _client_chunks(mode, n)
    data_received, backend_received = conn.data_received, backend.data_received
    cout, bout = conn.transport.out, backend.transport.out
    for c in chunks[:200]:  # warm the caches (the shape cache learns in the first few)
        data_received(c)
        backend_received(answer)
    prof = cProfile.Profile() if profile else None
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    for c in chunks:
        data_received(c)
        backend_received(answer)
    if prof:
        prof.disable()
    dt = time.perf_counter() - t0
    if len(bout) < n or len(cout) < n:
        raise RuntimeError(f"{mode}/{target}: the relay did not forward every transaction")
    if audit and mode != "prepared" and len(records) < n:
        raise RuntimeError(f"{mode}/{target}: missing audit records")
    for c in (cout, bout, records):
        del c[:]
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(40)
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    return 1e6 * dt / n


TARGETS = ("pgveil", "pgveil-governed", "pgveil+audit", "pgveil-governed+audit")
MODES = ("simple", "extended", "prepared")


async def _main(args) -> None:
    if args.profile:
        mode, target = args.profile.split("/")
        print(f"{mode}/{target}: {run(mode, target, args.n, profile=True):.2f} us/txn")
        return
    print(f"{'mode':9} {'target':24} {'us/txn (median of 5)':>22}")
    for mode in args.modes.split(","):
        for target in args.targets.split(","):
            times = [run(mode, target, args.n) for _ in range(5)]
            print(f"{mode:9} {target:24} {statistics.median(times):14.2f}  (min {min(times):.2f})", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.relaypath", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20000, help="transactions per run")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--profile", metavar="MODE/TARGET", help="cProfile one (mode, target) instead")
    args = p.parse_args(argv)
    from proxy.runner import install_event_loop_policy

    install_event_loop_policy()
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
