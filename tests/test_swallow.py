"""Swallow: exactly the replies of pgveil's injected Close + Parse are dropped, in the right sync group."""
from __future__ import annotations

from proxy.session.dp_statements import Swallow
from proxy.wire.holding import Held, HoldingWalker

Z = Held(b"Z\x00\x00\x00\x05I")
PARSE_OK = Held(b"1\x00\x00\x00\x04")
CLOSE_OK = Held(b"3\x00\x00\x00\x04")


def run(swallow: Swallow, replies: list[Held]) -> list[bytes]:
    walker = HoldingWalker()
    out = []
    for r in replies:
        passed, _ready = swallow.filter(r, walker)
        if passed is not None:
            out.append(passed[:1])
    return out


def test_drops_the_pair_in_the_current_group_only():
    s = Swallow()
    s.inject(in_flight=0)
    # our Close + Parse, then the client's own Parse later in the same group, then the next group
    assert run(s, [CLOSE_OK, PARSE_OK, PARSE_OK, Z, CLOSE_OK, PARSE_OK, Z]) == [b"1", b"Z", b"3", b"1", b"Z"]
    assert not s.pending


def test_waits_for_earlier_groups():
    s = Swallow()
    s.inject(in_flight=2)  # two earlier groups still to be answered: their replies pass
    assert run(s, [PARSE_OK, Z, CLOSE_OK, Z, CLOSE_OK, PARSE_OK, Z]) == [b"1", b"Z", b"3", b"Z", b"Z"]


def test_an_error_before_the_pair_ends_the_wait():
    s = Swallow()
    s.inject(in_flight=0)
    assert run(s, [Z]) == [b"Z"]  # the group failed before our messages: no replies came for them
    assert not s.pending
    assert run(s, [CLOSE_OK, PARSE_OK]) == [b"3", b"1"]  # later replies are the client's


def test_ready_passed_unheld_counts_as_a_group():
    s = Swallow()
    s.inject(in_flight=1)
    s.ready_passed(1)  # a ReadyForQuery whose header went out before the hold began
    assert run(s, [CLOSE_OK, PARSE_OK, Z]) == [b"Z"]


def test_no_injection_after_a_parse_in_the_group():
    s = Swallow()
    assert s.opens_group
    s.client_sent(b"P")
    assert not s.opens_group
    s.client_sent(b"B")
    assert not s.opens_group
    s.client_sent(b"S")
    assert s.opens_group


def test_one_injection_per_group():
    s = Swallow()
    s.inject(in_flight=0)
    assert not s.opens_group  # a second stale Bind in this group is not re-prepared (its replies would pass)
    s.client_sent(b"S")
    assert s.opens_group


def test_deallocate_and_discard_forget_dp_statements():
    from proxy.session.prepared import PreparedTracker, sql_level_ops

    t = PreparedTracker()
    t.protocol["s1"], t.sources["s1"], t.dp["s1"] = ("k",), ("q", ()), object()
    t.after_sql("DEALLOCATE s1", ("k",), sql_level_ops("DEALLOCATE s1"))
    assert "s1" not in t.dp and "s1" not in t.sources
    t.protocol["s2"], t.dp["s2"] = ("k",), object()
    t.after_sql("DISCARD ALL", ("k",), sql_level_ops("DISCARD ALL"))
    assert not t.dp and not t.protocol
