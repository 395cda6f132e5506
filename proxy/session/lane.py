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
No I/O; the server decides when (``proxy/server.py``).
"""
from __future__ import annotations

import bisect
import math
import time

from rewrite import shapes

from ..wire import frontend as fe
from .governor import Forward

# Per lane, at most: the C side searches these linearly (by hash), once per message.
MAX_TEMPLATES = 32
MAX_PARSES = 64
MAX_BINDS = 256


def lane_tables(governed) -> tuple[float, list, list, list] | None:
    """(valid_until, templates, parses, binds) for ``Core.add``'s lane, or None when the session must stay on the loop.

    ``valid_until``: the first edge of a policy's validity window after now (time.time()), where
    verdicts may change with the clock alone; taken before the tables, so none outlives its epoch.
    """
    if not governed.can_leave():
        return None
    governor = governed.governor
    state = governor.holder.current
    edges = state.policies._edges
    now = time.time()
    at = bisect.bisect_right(edges, now)
    valid_until = edges[at] if at < len(edges) else math.inf
    ctx = governor._context(state)
    templates, seen = [], set()
    for sql in reversed(governed.recent_queries):  # newest first
        found = shapes.template_of(sql, ctx)
        if found is None or found[0] in seen:
            continue
        key, template = found
        seen.add(key)
        templates.append((key.encode(), tuple(s.encode() for s in template.segments), template.order))
        if len(templates) >= MAX_TEMPLATES:
            break
    key = governor.context_key()
    prepared = governed.prepared
    protocol = prepared.protocol
    binds = [name.encode() for name, under in protocol.items() if under == key][:MAX_BINDS]
    parses = []
    for body, entry in reversed(governed._parses.items()):
        msg, ops = entry[0], entry[1]
        if ops or protocol.get(msg.name) != key:
            continue  # SQL-level PREPARE/EXECUTE, or a statement not (or no longer) prepared under this context
        if msg.name and prepared.sources.get(msg.name) != (msg.query, msg.param_types):
            continue  # the name was prepared from another text: this Parse would change what a re-prepare uses
        verdict = governor.known(msg.query, True)
        if type(verdict) is not Forward:
            continue
        parses.append((body, fe.Parse(msg.name, verdict.sql, msg.param_types).encode()))
        if len(parses) >= MAX_PARSES:
            break
    return valid_until, templates, parses, binds


def absorb(session, in_flight: int, status: str, syncs: int, readies: int, parse_open: int) -> None:
    """What the lane did, as the session's own counters would have it had it relayed those messages."""
    governed = session.governed
    session.in_flight = in_flight
    session.transaction_status = status
    governed.syncs_sent += syncs
    governed.ready_received += readies
    if parse_open >= 0:
        governed.swallow.client_sent(b"P" if parse_open else b"S")
