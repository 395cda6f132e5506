"""Header walks of the per-chunk hot path: whole chunks judged from their 5-byte message headers.

Three functions, each in pure Python here (the reference) and in C
(``_walk.c``, built when a compiler is there; the pure versions are used
otherwise, or with ``PGVEIL_NO_SPEEDUPS=1``). Both give the same answers on any
input (tests/test_walk_speedups.py); the C ones cost a small fraction of a
microsecond where the Python loops cost several per chunk, which is most of
what the proxy adds to a pass-through transaction.

A *tag table* is 256 bytes, one per message type: 0 passes, 1 sends the chunk
to the general path, 2 (governed sessions: Bind) passes but has its span noted.
"""
from __future__ import annotations

import os
from struct import Struct

_HEADER = Struct("!cI")
_SYNC_TAGS = frozenset(b"QSF")


def tag_table(stop: bytes = b"", note: bytes = b"") -> bytes:
    """The 256-byte table: tags in ``stop`` end the walk, tags in ``note`` have their spans noted."""
    table = bytearray(256)
    for t in stop:
        table[t] = 1
    for t in note:
        table[t] = 2
    return bytes(table)


def client_syncs_py(data: bytes, table: bytes, limit: int) -> int:
    """Sync messages (Query, Sync, FunctionCall) in ``data``; -1 unless it is whole messages of valid length
    (4..``limit``) with no tag marked in ``table``."""
    unpack = _HEADER.unpack_from
    size = len(data)
    pos = 0
    syncs = 0
    while size - pos >= 5:
        tag, length = unpack(data, pos)
        code = tag[0]
        if table[code] or length < 4 or length > limit:
            return -1
        if code in _SYNC_TAGS:
            syncs += 1
        pos += 1 + length
    return syncs if pos == size else -1


def governed_syncs_py(data: bytes, table: bytes, limit: int) -> tuple[int, list[int] | None] | None:
    """``client_syncs`` of a governed session: None, or (Syncs, spans [start, end, ...] of tags marked 2 or None)."""
    unpack = _HEADER.unpack_from
    size = len(data)
    pos = 0
    syncs = 0
    binds = None
    while size - pos >= 5:
        tag, length = unpack(data, pos)
        if length < 4 or length > limit:
            return None
        end = pos + 1 + length
        mark = table[tag[0]]
        if mark:
            if mark != 2:
                return None
            if binds is None:
                binds = [pos, end]
            else:
                binds += (pos, end)
        elif tag == b"S":
            syncs += 1
        pos = end
    return (syncs, binds) if pos == size else None


def backend_ready_py(data: bytes, rows: int, count_rows: bool):
    """From a message boundary: (ReadyForQuery count, last status or -1, DataRows open, body bytes still to come,
    partial header at the end or None, whether the next chunk starts with a status byte, rows per
    ReadyForQuery or None). The count is -1 for a length below 4."""
    unpack = _HEADER.unpack_from
    size = len(data)
    pos = 0
    count = 0
    status = -1
    remaining = 0
    want_peek = False
    done = [] if count_rows else None
    tail = None
    while size - pos >= 5:
        tag, length = unpack(data, pos)
        if length < 4:
            return -1, -1, rows, 0, None, False, None
        end = pos + 1 + length
        if tag == b"D":
            rows += 1
        elif tag == b"Z" and length > 4:
            if pos + 5 < size:
                count += 1
                status = data[pos + 5]
                if count_rows:
                    done.append(rows)
                    rows = 0
            else:
                want_peek = True
        if end > size:
            remaining = end - size
            pos = size
            break
        pos = end
    if pos < size:
        tail = bytes(data[pos:])
    return count, status, rows, remaining, tail, want_peek, done


client_syncs, governed_syncs, backend_ready = client_syncs_py, governed_syncs_py, backend_ready_py
SPEEDUPS = False
if not os.environ.get("PGVEIL_NO_SPEEDUPS"):
    try:
        from ._walk import backend_ready, client_syncs, governed_syncs  # noqa: F401,F811
        SPEEDUPS = True
    except ImportError:  # not built (no compiler at install time): the pure versions above
        pass
