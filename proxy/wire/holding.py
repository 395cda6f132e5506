"""Backend stream walking that can hold back whole messages of chosen types.

When pgveil refuses a statement it sends the backend a stand-in that fails, so
the backend's ErrorResponse arrives exactly where the refused statement's answer
belongs (after the replies to everything pipelined before it, before
ReadyForQuery). ``HoldingWalker`` passes every other byte through as it comes
and hands back held ErrorResponses whole, so the session can swap in its own
message. It continues from the state the fast ``ready_count`` path left.
"""
from __future__ import annotations

from dataclasses import dataclass

from .framing import _HEADER, ProtocolViolation, StreamWalker


@dataclass(frozen=True, slots=True)
class Held:
    """A whole message (header included) held back for the caller to judge."""

    data: bytes


class HoldingWalker(StreamWalker):
    __slots__ = ("_holding", "_hold_left", "_header_forwarded", "_peek_pending", "idle")

    def __init__(self) -> None:
        super().__init__(b"Z")
        self._holding: bytearray | None = None
        self._hold_left = 0
        # False only while ``_header`` holds bytes split() kept back (not sent yet); a
        # partial header left by the fast path (ready_count) has always been sent on.
        self._header_forwarded = True
        self._peek_pending = False
        # No held message, pending status byte or unsent header: the fast path
        # (``ready_count``, inherited) may take the next chunk. Updated by split().
        self.idle = True

    def split(self, data: bytes, hold: frozenset[bytes]) -> tuple[list, int, int | None]:
        """Cut ``data`` into bytes to forward and ``Held`` messages; also count ReadyForQuery."""
        pieces: list = []
        count, status = 0, None
        if self.count_rows:
            self.rows_done = []
        size = len(data)
        pos = 0
        plain_start = 0
        if self._want_peek is not None:  # the fast path stopped right before a ReadyForQuery status byte
            self._want_peek = None
            self._peek_pending = True
        while pos < size:
            if self._holding is not None:
                take = min(self._hold_left, size - pos)
                self._holding += data[pos:pos + take]
                pos += take
                plain_start = pos
                self._hold_left -= take
                if self._hold_left == 0:
                    pieces.append(Held(bytes(self._holding)))
                    self._holding = None
                continue
            if self._remaining:
                if self._peek_pending:
                    count += 1
                    status = data[pos]
                    self._peek_pending = False
                    if self.count_rows:
                        self.rows_done.append(self.rows_open)
                        self.rows_open = 0
                take = min(self._remaining, size - pos)
                self._remaining -= take
                pos += take
                continue
            carried = self._header
            need = 5 - len(carried)
            header = carried + bytes(data[pos:pos + need])
            if len(header) < 5:
                if carried and self._header_forwarded:
                    # the fast path already sent the start of this header: send the rest as it comes
                    pieces.append(bytes(data[plain_start:]))
                else:
                    if pos > plain_start:
                        pieces.append(bytes(data[plain_start:pos]))
                    self._header_forwarded = False  # these bytes stay here until the tag is known
                self._header = header
                self.idle = self._header_forwarded and self._holding is None and not self._peek_pending
                return pieces, count, status
            tag, length = _HEADER.unpack_from(header, 0)
            if length < 4:
                raise ProtocolViolation(f"invalid message length {length} from server")
            header_start = pos - len(carried)  # negative when the header began in an earlier chunk
            carried_sent = self._header_forwarded
            pos += need
            self._header = b""
            self._header_forwarded = True
            # A header whose first bytes already went out on the fast path cannot be held any more.
            if tag in hold and not (carried and carried_sent):
                if header_start > plain_start:
                    pieces.append(bytes(data[plain_start:header_start]))
                self._holding = bytearray(header)
                self._hold_left = length - 4
                if self._hold_left == 0:
                    pieces.append(Held(bytes(self._holding)))
                    self._holding = None
                plain_start = pos
                continue
            if carried and not carried_sent:
                pieces.append(carried)  # held back at the end of the last chunk; send it now
            if tag == b"Z" and length > 4:
                self._peek_pending = True
            elif tag == b"D":
                self.rows_open += 1
            self._remaining = length - 4
        if plain_start < size:
            pieces.append(bytes(data[plain_start:]))
        self.idle = self._holding is None and not self._peek_pending
        return pieces, count, status
