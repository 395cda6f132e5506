"""The per-chunk hot path of a READY session: whole chunks relayed without events or commands.

``Session.client_bytes`` and ``Session.backend_bytes`` (this mixin) read only message headers
(``proxy.wire.walk``) for the chunks that need nothing else, and for the common chunks of governed
and audited sessions (one Query; a Parse with its Binds, Executes and Sync) call the very functions
the general path calls. Anything else returns None / False before any message was acted on, and
``Session.handle`` takes the chunk. Sans-io like the rest of the session; no state of its own.
"""
from __future__ import annotations

from struct import Struct

from ..wire import ProtocolViolation, frontend as fe
from ..wire.walk import client_syncs, governed_syncs, tag_table
from .governed import NeedsDP
from .states import State

_HEADER = Struct("!cI")
_READY = State.READY
# Client messages a pass-through session must look at itself rather than forward blindly.
_INSPECTED_TABLE = tag_table(stop=b"X")
# ... and a governed session: every statement and the function-call protocol; Binds and a
# leading Parse are judged in place (_governed_bytes).
_GOVERNED_TABLE = tag_table(stop=b"XQFC", note=b"BP")
# ... and an audited ungoverned session: statements are recorded, and each sync message
# closes an audit group (_audited_bytes).
_AUDITED_TABLE = tag_table(stop=b"X", note=b"QPSFBC")
_PARSE = ord("P")
# Client messages each answered by one ReadyForQuery.
_SYNC_TAGS = frozenset({b"Q", b"S", b"F"})


def _first_sync(data: bytes) -> int:
    """Where the first Sync of a chunk of whole, valid messages starts (its length if none)."""
    pos, size = 0, len(data)
    while pos < size:
        tag, length = _HEADER.unpack_from(data, pos)
        if tag == b"S":
            return pos
        pos += 1 + length
    return size


class HotPath:
    """Mixed into Session: the attributes it reads are the session's."""

    def client_bytes(self, data: bytes) -> bytes | None:
        """Bytes to forward to the backend unchanged, or None to take ``handle``.

        Applies when the session is READY, nothing is buffered and ``data`` holds
        only whole messages that need no inspection: then only the headers are
        read, counting the messages that the backend answers with ReadyForQuery.
        A governed session has its own loop (``_governed_bytes``).
        """
        if self.state is not _READY or self._client_buf.pending or self._held is not None:
            return None
        if self.governed is not None:
            return self._governed_bytes(data)
        if self.audit is not None:
            return self._audited_bytes(data)
        syncs = client_syncs(data, _INSPECTED_TABLE, self.settings.max_message_size)
        if syncs < 0:
            return None
        self.in_flight += syncs
        return data

    def _governed_bytes(self, data: bytes) -> bytes | None:
        """``client_bytes`` of a governed session, for the chunks drivers send per statement.

        A chunk that is one Query, or a Parse followed by Binds, Describes, Executes and
        Syncs (the extended protocol's unnamed statement, re-parsed each time): the Query or
        the Parse goes to ``GovernedRelay.client_message`` exactly as on the general path,
        and the rest is forwarded as it came if ``GovernedRelay.binds_current`` says the
        Binds' statements were prepared under the current policy context. Everything else
        (a stale Bind, a second Parse, Close, FunctionCall, Terminate, a DP answer to wait
        for) takes the general path, before any message of the chunk was acted on.
        """
        governed = self.governed
        if data[:1] == b"Q":
            return self._governed_query(data)
        walked = governed_syncs(data, _GOVERNED_TABLE, self.settings.max_message_size)
        if walked is None:
            return None
        syncs, noted = walked
        parse_end = 0
        if noted is not None:
            if noted[0] == 0 and data[0] == _PARSE:
                parse_end = noted[1]
                noted = noted[2:]
            if noted:
                if any(data[start] == _PARSE for start in noted[::2]):
                    return None  # a Parse after other messages: the general path keeps their order
                if parse_end and syncs and _first_sync(data) < noted[-1]:
                    # a Bind in a later sync group than the Parse's: for a DP statement the general path
                    # decides there whether its answer is still fresh (GovernedRelay._client_message)
                    return None
                # Checked before the Parse runs: it can only make its own statement current.
                if governed.audit is not None or not governed.binds_current(data, noted):
                    return None  # a stale statement is refused (and each Bind audited) on the general path
        if parse_end:
            governed.in_flight = self.in_flight
            try:
                piece = governed.client_message(b"P", data[5:parse_end], self.transaction_status)
            except (NeedsDP, ProtocolViolation):
                return None  # nothing was recorded yet: the general path asks for the answer or reports the error
            data = piece + data[parse_end:]
        self.in_flight += syncs
        governed.syncs_sent += syncs  # what client_message does for these messages
        governed.swallow.client_sent_run(syncs > 0)  # no Close here, and a Parse only before the Syncs
        return data

    def _audited_bytes(self, data: bytes) -> bytes | None:
        """``client_bytes`` of an audited unrestricted session: what ``_relay_client`` records, in place.

        Every Query and Parse opens a record in the audit group its position gives (the sync
        messages before it); all are decoded before any is recorded, so a malformed one sends
        the whole chunk to the general path (which reports it) with nothing recorded twice.
        """
        walked = governed_syncs(data, _AUDITED_TABLE, self.settings.max_message_size)
        if walked is None:
            return None
        noted = walked[1]
        if noted is None:
            return data
        steps = []  # decoded first: (tag, statement text or name)
        try:
            for i in range(0, len(noted), 2):
                start, end = noted[i], noted[i + 1]
                steps.append(self._audit_step(data[start:start + 1], data[start + 5:end]))
        except ProtocolViolation:
            return None
        for tag, value in steps:
            self._audit_message(tag, value)
        return data

    @staticmethod
    def _audit_step(tag: bytes, body: bytes) -> tuple[bytes, object]:
        """What the audit needs of one client message of an unrestricted session (raises on a malformed one)."""
        if tag == b"Q":
            return tag, fe.query_sql(body)
        if tag == b"P":
            msg = fe.Parse.decode(body)
            return tag, (msg.name, msg.query)
        if tag == b"B":
            return tag, fe.bind_statement(body)
        if tag == b"C":
            close = fe.Close.decode(body)
            return tag, close.name if close.kind == "S" else None
        return tag, None

    def _audit_message(self, tag: bytes, value) -> None:
        """Audit one client message of an unrestricted session and count its sync group."""
        audit = self.audit
        if tag == b"Q" or tag == b"P":
            purpose, project = self.context_choice.get("pgveil.purpose"), self.context_choice.get("pgveil.project")
            if tag == b"Q":
                audit.begin(self._syncs_sent, value, decision="allowed", purpose=purpose, project=project)
            else:
                audit.parsed(self._syncs_sent, value[0], value[1], decision="allowed", purpose=purpose, project=project)
        elif tag == b"B":
            audit.bound(self._syncs_sent, value)
        elif tag == b"C":
            if value is not None:
                audit.forget(value)
            return
        if tag in _SYNC_TAGS:
            self._syncs_sent += 1
            self.in_flight += 1

    def _governed_query(self, data: bytes) -> bytes | None:
        """A chunk that is exactly one Query message: judged as on the general path, without its objects."""
        if len(data) < 5:
            return None
        length = int.from_bytes(data[1:5], "big")
        if length + 1 != len(data) or length < 4 or length > self.settings.max_message_size:
            return None
        governed = self.governed
        governed.in_flight = self.in_flight
        try:
            out = governed.client_message(b"Q", data[5:], self.transaction_status)
        except (NeedsDP, ProtocolViolation):
            return None  # nothing was recorded yet: the general path asks for the answer or reports the error
        self.in_flight += 1
        return out

    def backend_bytes(self, data: bytes) -> bool:
        """Note backend bytes that the caller forwards as they are; False: use ``handle``."""
        walker = self._walker
        governed = self.governed
        if self.state is not _READY or not walker.idle or (governed is not None and governed.pending):
            return False
        count, status = walker.ready_count(data)
        if count:
            if governed is not None:
                governed.ready_received += count  # as GovernedRelay.backend_data counts them
            self._ready(count, status)
        return True

    def _ready(self, count: int, status: int) -> None:
        self.in_flight = max(0, self.in_flight - count)
        self.transaction_status = chr(status)
        if self.audit is not None:
            self.audit.ready(self._walker.rows_done)
