"""The C header walks (proxy/wire/_walk.c) give exactly the pure-Python answers (proxy/wire/walk.py).

Random message streams, valid and not (lengths below 4, over the limit, cut short,
garbage), random tag tables and every way of cutting a stream; bytes, bytearray and
memoryview input. Without a compiler the C module is not built and these tests skip,
unless PGVEIL_REQUIRE_SPEEDUPS is set (CI sets it: there it must have been built).
"""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings, strategies as st

from proxy.wire import walk

from .speedups import c_module, skip_unless_built

_walk = c_module("proxy.wire._walk")
pytestmark = skip_unless_built(_walk)

TAGS = b"QSFPBCDEHXdcfpTZDDDDZCnsIKR1234tvAN\x00\xff"


@st.composite
def streams(draw) -> bytes:
    """Mostly well-formed messages with some broken ones, optionally cut anywhere."""
    parts = []
    for _ in range(draw(st.integers(0, 12))):
        tag = draw(st.sampled_from(TAGS))
        body = draw(st.binary(max_size=12))
        kind = draw(st.sampled_from(["ok"] * 8 + ["short", "long", "huge"]))
        length = {"ok": 4 + len(body), "short": draw(st.integers(0, 3)), "long": 4 + len(body) + draw(st.integers(1, 9)),
                  "huge": draw(st.integers(2**31, 2**32 - 1))}[kind]
        parts.append(bytes([tag]) + struct.pack("!I", length) + body)
    data = b"".join(parts)
    if data and draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return data


tables = st.builds(lambda stop, note: walk.tag_table(stop=bytes(stop), note=bytes(note)),
                   st.lists(st.sampled_from(TAGS), max_size=4), st.lists(st.sampled_from(TAGS), max_size=2))
limits = st.sampled_from([4, 8, 16, 64 * 1024 * 1024])


@settings(max_examples=600, deadline=None)
@given(streams(), tables, limits)
def test_client_walks_agree(data, table, limit):
    assert _walk.client_syncs(data, table, limit) == walk.client_syncs_py(data, table, limit)
    assert _walk.governed_syncs(data, table, limit) == walk.governed_syncs_py(data, table, limit)


@settings(max_examples=600, deadline=None)
@given(streams(), st.integers(0, 10**12), st.booleans())
def test_backend_walk_agrees(data, rows, count_rows):
    assert _walk.backend_ready(data, rows, count_rows) == walk.backend_ready_py(data, rows, count_rows)


@given(streams(), tables)
def test_any_bytes_like_input(data, table):
    for view in (bytearray(data), memoryview(data)):
        assert _walk.client_syncs(view, table, 1 << 20) == walk.client_syncs_py(data, table, 1 << 20)
        assert _walk.backend_ready(view, 0, True) == walk.backend_ready_py(data, 0, True)


def test_examples():
    """Values a mistake in either version would change."""
    q = b"Q" + struct.pack("!I", 8) + b"SEL\x00"
    sync = b"S\x00\x00\x00\x04"
    bind = b"B" + struct.pack("!I", 6) + b"\x00\x00"
    table = walk.tag_table(stop=b"X")
    governed = walk.tag_table(stop=b"XQPFC", note=b"B")
    for cs in (_walk.client_syncs, walk.client_syncs_py):
        assert cs(q + sync, table, 100) == 2
        assert cs(q + sync[:3], table, 100) == -1  # not whole
        assert cs(q, table, 7) == -1  # over the limit
        assert cs(b"X\x00\x00\x00\x04", table, 100) == -1  # inspected
    assert _walk.governed_syncs(bind + sync, governed, 100) == (1, [0, 7])
    assert _walk.governed_syncs(q, governed, 100) is None
    z = b"Z\x00\x00\x00\x05I"
    d = b"D\x00\x00\x00\x06\x00\x00"
    assert _walk.backend_ready(d + d + z + d, 0, True) == (1, ord("I"), 1, 0, None, False, [2])
    assert _walk.backend_ready(d + z[:5], 0, False) == (0, -1, 1, 1, None, True, None)
    assert _walk.backend_ready(d + z[:3], 4, False) == (0, -1, 5, 0, z[:3], False, None)
    assert _walk.backend_ready(b"D\x00\x00\x00\x03", 0, False)[0] == -1


def test_wrong_arguments_raise_not_crash():
    with pytest.raises(TypeError):
        _walk.client_syncs(b"", b"short table", 1)
    with pytest.raises(TypeError):
        _walk.client_syncs(b"")
    with pytest.raises(TypeError):
        _walk.backend_ready(12, 0, False)
