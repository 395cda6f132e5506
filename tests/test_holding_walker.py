"""HoldingWalker: ErrorResponses held whole at any chunking, everything else passed through in order."""
from __future__ import annotations

import random

from proxy.wire import backend as be
from proxy.wire.holding import Held, HoldingWalker

HOLD = frozenset({b"E"})
ERR = be.ErrorResponse.build("ERROR", "42601", 'syntax error at or near "pgveil_refusal_x"').encode()
STREAM = b"".join([
    be.RowDescription((be.FieldDescription("a", 0, 0, 23, 4, -1, 0),)).encode(),
    be.DataRow((b"1",)).encode(), be.DataRow((b"y" * 300,)).encode(), be.CommandComplete("SELECT 2").encode(),
    ERR, be.ReadyForQuery("E").encode(), be.ParseComplete().encode(), ERR, be.ReadyForQuery("I").encode(),
])


def run(chunks, walker=None):
    walker = walker or HoldingWalker()
    out, held, count, status = b"", [], 0, None
    for c in chunks:
        pieces, n, st = walker.split(c, HOLD)
        count += n
        status = st if n else status
        for p in pieces:
            if isinstance(p, Held):
                held.append(p.data)
                out += b"<HELD>"
            else:
                out += p
    return out, held, count, status


EXPECTED_OUT = STREAM.replace(ERR, b"<HELD>")


def test_whole_stream():
    assert run([STREAM]) == (EXPECTED_OUT, [ERR, ERR], 2, ord("I"))


def test_every_pair_of_split_points():
    s = STREAM
    for i in range(0, len(s) + 1, 3):
        for j in range(i, len(s) + 1, 5):
            assert run([s[:i], s[i:j], s[j:]]) == (EXPECTED_OUT, [ERR, ERR], 2, ord("I")), (i, j)


def test_byte_by_byte():
    assert run([STREAM[i:i + 1] for i in range(len(STREAM))]) == (EXPECTED_OUT, [ERR, ERR], 2, ord("I"))


def test_random_alternation_with_the_fast_path():
    """Switching between ready_count (fast, forwards everything) and split keeps the stream intact."""
    rng = random.Random(5)
    for _ in range(300):
        walker = HoldingWalker()
        cuts = sorted(rng.sample(range(1, len(STREAM)), 6))
        chunks = [STREAM[a:b] for a, b in zip([0, *cuts], [*cuts, len(STREAM)])]
        out, ready = b"", 0
        for c in chunks:
            if walker.idle and rng.random() < 0.5:
                n, _ = walker.ready_count(c)
                ready += n
                out += c
            else:
                pieces, n, _ = walker.split(c, HOLD)
                ready += n
                out += b"".join(p.data if isinstance(p, Held) else p for p in pieces)
        assert out == STREAM and ready == 2
