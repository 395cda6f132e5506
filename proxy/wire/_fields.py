"""Readers and writers for the protocol's primitive fields (Int16, Int32, String, Byten)."""
from __future__ import annotations

from struct import Struct

from .framing import ProtocolViolation

INT16 = Struct("!h")
UINT16 = Struct("!H")
INT32 = Struct("!i")
UINT32 = Struct("!I")
HEADER = Struct("!cI")


class Reader:
    """Sequential reader over a message body; every overrun is a ProtocolViolation."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _need(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.data):
            raise ProtocolViolation("message body shorter than its fields")

    def int16(self) -> int:
        self._need(2)
        (v,) = INT16.unpack_from(self.data, self.pos)
        self.pos += 2
        return v

    def uint16(self) -> int:
        self._need(2)
        (v,) = UINT16.unpack_from(self.data, self.pos)
        self.pos += 2
        return v

    def int32(self) -> int:
        self._need(4)
        (v,) = INT32.unpack_from(self.data, self.pos)
        self.pos += 4
        return v

    def uint32(self) -> int:
        self._need(4)
        (v,) = UINT32.unpack_from(self.data, self.pos)
        self.pos += 4
        return v

    def byte(self) -> int:
        self._need(1)
        v = self.data[self.pos]
        self.pos += 1
        return v

    def cstring_bytes(self) -> bytes:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise ProtocolViolation("unterminated string in message")
        v = self.data[self.pos:end]
        self.pos = end + 1
        return bytes(v)

    def cstring(self) -> str:
        try:
            return self.cstring_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolViolation("invalid UTF-8 in message string") from None

    def take(self, n: int) -> bytes:
        self._need(n)
        v = self.data[self.pos:self.pos + n]
        self.pos += n
        return bytes(v)

    def maybe_bytes(self) -> bytes | None:
        """An Int32 length followed by that many bytes; -1 means NULL."""
        n = self.int32()
        if n == -1:
            return None
        if n < -1:
            raise ProtocolViolation(f"invalid value length {n}")
        return self.take(n)

    def rest(self) -> bytes:
        v = self.data[self.pos:]
        self.pos = len(self.data)
        return bytes(v)

    def count(self, width: int = 2, item_min: int = 0) -> int:
        """A non-negative element count that cannot claim more items than bytes left.

        Two-byte counts are unsigned, as PostgreSQL reads them (up to 65535 bind
        parameters since PostgreSQL 14).
        """
        n = self.uint16() if width == 2 else self.int32()
        if n < 0 or (item_min and n * item_min > len(self.data) - self.pos):
            raise ProtocolViolation(f"invalid element count {n}")
        return n

    def end(self) -> None:
        if self.pos != len(self.data):
            raise ProtocolViolation("trailing bytes after message fields")


def cstr(s: str | bytes) -> bytes:
    b = s.encode("utf-8") if isinstance(s, str) else s
    if b"\x00" in b:
        raise ValueError("protocol strings cannot contain NUL")
    return b + b"\x00"


def maybe_bytes(v: bytes | None) -> bytes:
    return INT32.pack(-1) if v is None else INT32.pack(len(v)) + v


def frame(tag: bytes, body: bytes) -> bytes:
    return HEADER.pack(tag, len(body) + 4) + body
