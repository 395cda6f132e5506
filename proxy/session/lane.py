"""What a governed session's lane in the relay thread may pass without Python, and what it did.

A governed session that is between statements (``GovernedRelay.can_leave``) can be handed to
the relay thread (``proxy/_relay.c``) with three tables, each holding only what this session's
Python path has already judged under the current policy and would judge the same way again:

- **templates**: the shapes of Query texts it forwarded lately (``rewrite.shapes.template_of``):
  the C side computes the same fast key, fills the same segments with the client's literals and
  makes the same one-statement check with PostgreSQL's parser;
- **parses**: Parse bodies whose verdict the governor keeps (a Forward), with the Parse message
  that verdict sends; only where sending it again changes nothing here (the statement is already
  prepared under the current context, from the same text);
- **binds**: statement names prepared under the current context.

Describe, Execute, Sync and Flush pass too. Any other message (a new shape, Close, a SET, COPY,
a FunctionCall...) returns the session to the event loop at that message, as does any policy
swap (the lane's generation is then old) and the next edge of a policy's validity window.
``absorb`` folds what the lane did into the session.
No I/O; ``proxy/handoff.py`` decides when.
"""
from __future__ import annotations

import time

from rewrite import shapes

# Per lane, at most (the C side searches these linearly, by hash, once per message); templates: one per
# shape the session keeps (GovernedRelay.RECENT_SHAPES).
MAX_PARSES = 64
MAX_BINDS = 256


def lane_tables(governed, queries: bool = True) -> tuple[float, list, list, list] | None:
    """(valid_until, templates, parses, binds) for ``Core.add``'s lane, or None when the session must stay on the loop.

    ``valid_until``: when the current validity interval of the policies ends (verdicts may change
    with the clock alone then); read before the tables, so none outlives its interval.
    ``queries``: whether the relay thread can pass Query texts at all (else no templates).
    """
    if not governed.can_leave():
        return None
    governor = governed.governor
    state = governor.holder.current
    valid_until = state.policies.next_edge(time.time())
    templates = []
    if queries:
        ctx = governor.context(state)
        for sql in reversed(governed.recent_shapes.values()):  # most recent first
            found = shapes.template_of(sql, ctx)
            if found is not None:
                key, template = found
                templates.append((key.encode(), tuple(s.encode() for s in template.segments), template.order))
    key = governor.context_key()
    binds = [name.encode() for name, under in governed.prepared.protocol.items() if under == key][:MAX_BINDS]
    return valid_until, templates, governed.lane_parses(MAX_PARSES), binds


def absorb(session, back) -> None:
    """What the lane did (``relay_thread.Returned``), as the session's own counters would have it."""
    governed = session.governed
    session.in_flight = back.in_flight
    session.transaction_status = back.status
    governed.syncs_sent += back.syncs
    governed.ready_received += back.readies
    if back.parse_open >= 0:
        governed.swallow.lane_passed(bool(back.parse_open))
