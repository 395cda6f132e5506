"""Sessions relayed off the event loop, by the C thread of ``proxy/_relay.c``.

A session nothing inspects (an unrestricted user, no audit, no TLS) is, once READY, a
byte relay that counts the statements in flight. Through the event loop every chunk of
it costs a Python callback and a transport write each way; handed to the relay thread,
none do. A governed session goes there too between statements, with a *lane*
(``session/lane.py``): the statements its Python path already judged pass in C, and the
first message that needs judging returns the session to the event loop (``PairReturned``).
``RelayThread`` is the Python face of that thread: ``adopt`` takes a session's
two (dup'ed) sockets, ``events`` says what the server must act on (a pair closed, with
or without a statement left running; a message of invalid length; a pair returned),
``invalidate_lanes`` voids every lane (a policy swap), ``stop`` ends it.

No asyncio here: ``proxy/server.py`` watches ``notify_fd`` and decides when a session
is handed over (``Session.can_hand_off``). Without the C module (no compiler at install
time), or with ``PGVEIL_NO_SPEEDUPS=1`` / ``PGVEIL_NO_RELAY_THREAD=1``, there is no relay
thread and every session stays on the event loop, which is just as correct.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

from .wire.framing import length_violation

try:
    from . import _relay
except ImportError:  # not built: sessions stay on the event loop
    _relay = None


@dataclass(frozen=True, slots=True)
class PairClosed:
    cancel: bool  # the client left with a statement in flight: cancel it on the backend


@dataclass(frozen=True, slots=True)
class PairViolation:
    """A message of invalid length; the pair relays nothing more until ``Pair.close(error)``."""

    from_client: bool
    message: str


@dataclass(frozen=True, slots=True)
class PairReturned:
    """A governed pair met a message only Python may judge; ``Pair.take_back()`` gives its sockets back."""


_RETURNED = PairReturned()


@dataclass(frozen=True, slots=True)
class Returned:
    """What ``take_back`` hands over: the fds (the caller's now), unsent bytes, and what the lane did."""

    client_fd: int
    backend_fd: int
    client_bytes: bytes  # read from the client and not sent, from the message left to Python on
    backend_bytes: bytes  # a partial backend header
    in_flight: int
    status: str
    syncs: int  # Query/Sync messages the lane sent
    readies: int  # ReadyForQuery messages it relayed
    parse_open: int  # whether a Parse went out after the last sync message; -1: it passed nothing


def take_back(pair) -> Returned:
    """The sockets of a pair after its PairReturned event."""
    return Returned(*pair.take_back())


class RelayThread:
    def __init__(self, core) -> None:
        self._core = core
        self._ids = itertools.count(1)
        self._pairs: dict[int, tuple[object, int]] = {}  # pair id -> (owner, its max_message_size)
        self.notify_fd: int = core.notify_fd
        # Whether Query texts can pass a lane: the C side needs PostgreSQL's parser from pglast's extension,
        # from a libpg_query that no longer redirects the process's stderr while it parses (pglast 8: checked).
        import re
        from importlib.metadata import version

        import pglast.parser

        major = re.match(r"v?(\d+)", version("pglast"))
        self.lane_queries = False
        if major and int(major.group(1)) >= 8:
            self.lane_queries = _relay.use_parser(pglast.parser.__file__)

    def adopt(self, owner, client_fd: int, backend_fd: int, in_flight: int, status: str, max_message_size: int,
              lane: tuple | None = None):
        """Relay the two sockets from now on (the thread closes both fds, also if this raises); a Pair.

        ``lane``: a governed session's (generation, valid_until, templates, parses, binds), see ``session/lane.py``.
        """
        pair_id = next(self._ids)
        pair = self._core.add(pair_id, client_fd, backend_fd, in_flight, status, max_message_size, lane)
        self._pairs[pair_id] = (owner, max_message_size)
        return pair

    @staticmethod
    def lane_generation() -> int:
        """The generation to build a lane under (read before reading the policy it is built from)."""
        return _relay.lane_generation()

    @staticmethod
    def invalidate_lanes() -> None:
        """Every lane built so far passes nothing more (called on every policy swap)."""
        _relay.invalidate_lanes()

    def __len__(self) -> int:
        return len(self._pairs)

    def events(self) -> list[tuple[object, PairClosed | PairViolation | PairReturned]]:
        """(owner, what happened) for every event since the last call, in order."""
        out = []
        for pair_id, kind, a, b in self._core.events():
            known = self._pairs.get(pair_id)
            if known is None:
                continue
            owner, limit = known
            if kind == _relay.EV_CLOSED:
                del self._pairs[pair_id]
                out.append((owner, PairClosed(bool(a))))
            elif kind == _relay.EV_RETURNED:
                del self._pairs[pair_id]
                out.append((owner, _RETURNED))
            elif kind == _relay.EV_CLIENT_VIOLATION:
                out.append((owner, PairViolation(True, length_violation(bytes([a]), b, limit))))
            else:
                out.append((owner, PairViolation(False, f"invalid message length {b} from server")))
        return out

    def stop(self) -> None:
        """Close every pair still relayed and end the thread."""
        self._core.stop()


def open_relay_thread() -> RelayThread | None:
    """The relay thread, or None where it is not built or is switched off."""
    if _relay is None or os.environ.get("PGVEIL_NO_SPEEDUPS") or os.environ.get("PGVEIL_NO_RELAY_THREAD"):
        return None
    return RelayThread(_relay.Core())
