"""Message framing: where one protocol message ends and the next begins.

Two tools, for the two directions:
- ``MessageBuffer`` buffers client bytes and yields whole messages, enforcing a
  size limit; the proxy inspects every client message, so it needs them whole.
- ``StreamWalker`` follows backend bytes message by message *without buffering*
  (only the 5-byte headers are read), so a multi-gigabyte result streams through
  in constant memory while the proxy still sees each message's type.
"""
from __future__ import annotations

from struct import Struct

from .walk import backend_ready

_HEADER = Struct("!cI")
_INT32 = Struct("!I")

# Startup packets carry no type byte; the protocol caps them at 10000 bytes.
MAX_STARTUP_PACKET = 10_000


class ProtocolViolation(Exception):
    """The peer sent bytes that are not a valid protocol message (SQLSTATE 08P01)."""

    sqlstate = "08P01"


def length_violation(tag: bytes, length: int, limit: int) -> str | None:
    """Why a client message header is invalid (length below 4 or above ``limit``), or None."""
    if length < 4:
        return f"invalid message length {length} for message type {tag!r}"
    if length > limit:
        return f"message of type {tag!r} is {length} bytes, over the limit of {limit}"
    return None


class MessageBuffer:
    """Accumulates bytes from a peer and cuts them into whole messages."""

    __slots__ = ("_buf", "max_message_size", "pending")

    def __init__(self, max_message_size: int = 64 * 1024 * 1024) -> None:
        self._buf = bytearray()
        self.pending = self._buf  # the buffered bytes (always mutated in place): truthy when non-empty
        self.max_message_size = max_message_size  # may change as the session advances

    def feed(self, data: bytes) -> None:
        self._buf += data

    def __len__(self) -> int:
        return len(self._buf)

    def take_startup(self) -> bytes | None:
        """The body of the next untyped startup packet, or None if incomplete."""
        buf = self._buf
        if len(buf) < 4:
            return None
        (length,) = _INT32.unpack_from(buf, 0)
        if length < 8 or length > MAX_STARTUP_PACKET:
            raise ProtocolViolation(f"invalid length of startup packet: {length}")
        if len(buf) < length:
            return None
        body = bytes(buf[4:length])
        del buf[:length]
        return body

    def take_rest(self) -> bytes:
        """Whatever is buffered, whole messages or not (when handing a stream over)."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest

    def take_messages(self) -> tuple[list[tuple[bytes, bytes]], bytes]:
        """Every complete typed message as (tag, body), plus their raw bytes.

        The raw bytes are exactly what was received for those messages, so a
        caller that changes nothing can forward them without re-encoding.
        """
        buf = self._buf
        size = len(buf)
        pos = 0
        out: list[tuple[bytes, bytes]] = []
        while size - pos >= 5:
            tag, length = _HEADER.unpack_from(buf, pos)
            if length < 4 or length > self.max_message_size:
                raise ProtocolViolation(length_violation(tag, length, self.max_message_size))
            end = pos + 1 + length
            if end > size:
                break
            out.append((tag, bytes(buf[pos + 5:end])))
            pos = end
        if not pos:
            return out, b""
        raw = bytes(buf[:pos])
        del buf[:pos]
        return out, raw


class StreamWalker:
    """Tracks message boundaries in a byte stream without keeping the bodies.

    ``feed`` returns the tags of messages that *start* in the chunk together with
    the first byte of their body where the caller asked for it (``peek_tags``):
    ReadyForQuery's status byte is all the proxy needs to know about the
    backend's state.
    """

    __slots__ = ("_remaining", "_header", "_peek_tags", "_want_peek", "count_rows", "rows_open", "rows_done")

    def __init__(self, peek_tags: bytes = b"Z") -> None:
        # Row counting for the audit (off unless asked): DataRows since the last
        # ReadyForQuery, and per ReadyForQuery seen in the last call, its rows.
        self.count_rows = False
        self.rows_open = 0
        self.rows_done: list[int] = []
        self._remaining = 0  # body bytes of the current message still to come
        self._header = b""  # a partial header carried across chunks
        self._peek_tags = frozenset(peek_tags[i:i + 1] for i in range(len(peek_tags)))
        self._want_peek: bytes | None = None  # tag waiting for its first body byte

    @property
    def at_boundary(self) -> bool:
        """The next byte starts a message (nothing of the last one is still to come)."""
        return not self._remaining and not self._header and self._want_peek is None

    def feed(self, data: bytes) -> list[tuple[bytes, int | None]]:
        """Messages starting in ``data``: (tag, first body byte or None)."""
        events: list[tuple[bytes, int | None]] = []
        pos = 0
        size = len(data)
        if self._want_peek is not None and size:
            events.append((self._want_peek, data[0]))
            self._want_peek = None
        if self._remaining:
            step = min(self._remaining, size)
            self._remaining -= step
            pos = step
        if self._header:
            need = 5 - len(self._header)
            self._header += data[pos:pos + need]
            pos += need
            if len(self._header) < 5:
                return events
            pos = self._start_message(self._header, 0, data, pos - 0, events, carried=True)
            self._header = b""
        while pos < size:
            if size - pos < 5:
                self._header = bytes(data[pos:])
                break
            pos = self._start_message(data, pos, data, pos + 5, events, carried=False)
        return events

    def ready_count(self, data: bytes) -> tuple[int, int | None]:
        """How many ReadyForQuery messages start in ``data``, and the last one's status byte.

        The per-chunk hot path of the backend direction: when the previous chunk
        ended on a message boundary (the usual case) the headers are walked
        inline; anything straddling a boundary takes the general ``feed``.
        """
        if self.count_rows:
            self.rows_done = []
        if self._remaining or self._header or self._want_peek is not None or b"Z" not in self._peek_tags:
            count, status = 0, None
            for tag, first in self.feed(data):
                if tag == b"Z" and first is not None:
                    count += 1
                    status = first
                    if self.count_rows:
                        self.rows_done.append(self.rows_open)
                        self.rows_open = 0
                elif tag == b"D":
                    self.rows_open += 1
            return count, status
        count, status, rows, remaining, tail, want_peek, done = backend_ready(data, self.rows_open, self.count_rows)
        if count < 0:
            raise ProtocolViolation("invalid message length from server")
        self.rows_open = rows
        if done:
            self.rows_done = done
        if remaining:
            self._remaining = remaining
        if tail is not None:
            self._header = tail
        if want_peek:
            self._want_peek = b"Z"
        return count, (None if status < 0 else status)

    def _start_message(self, hdr, hpos: int, data: bytes, body_pos: int, events: list, *, carried: bool) -> int:
        tag, length = _HEADER.unpack_from(hdr, hpos)
        if length < 4:
            raise ProtocolViolation(f"invalid message length {length} from server")
        body = length - 4
        available = len(data) - body_pos
        if tag in self._peek_tags and body:
            if available > 0:
                events.append((tag, data[body_pos]))
            else:
                self._want_peek = tag
        else:
            events.append((tag, None))
        if body <= available:
            return body_pos + body
        self._remaining = body - available
        return len(data)
