"""Frontend (client to server) messages of protocol 3.0, one class each.

``decode(tag, body)`` returns the typed message; tags this module does not know
come back as ``Unknown`` and re-encode byte-exact. The ambiguous tag ``p``
(PasswordMessage, SASLInitialResponse, SASLResponse, GSSResponse) decodes to
``PasswordMessage``; its ``sasl_initial``/``raw`` views read it per auth stage.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ._shared import CopyData, Unknown, empty_message
from ._fields import HEADER, INT16, INT32, UINT16, Reader, cstr, frame, maybe_bytes

_QUERY_HEADER = HEADER.pack


@dataclass(frozen=True, slots=True)
class Bind:
    tag: ClassVar[bytes] = b"B"
    portal: str
    statement: str
    param_formats: tuple[int, ...]
    params: tuple[bytes | None, ...]
    result_formats: tuple[int, ...]

    @classmethod
    def decode(cls, body: bytes) -> "Bind":
        r = Reader(body)
        portal, statement = r.cstring(), r.cstring()
        pf = tuple(r.int16() for _ in range(r.count(item_min=2)))
        params = tuple(r.maybe_bytes() for _ in range(r.count(item_min=4)))
        rf = tuple(r.int16() for _ in range(r.count(item_min=2)))
        r.end()
        return cls(portal, statement, pf, params, rf)

    def encode(self) -> bytes:
        parts = [cstr(self.portal), cstr(self.statement), UINT16.pack(len(self.param_formats))]
        parts += [INT16.pack(f) for f in self.param_formats]
        parts.append(UINT16.pack(len(self.params)))
        parts += [maybe_bytes(p) for p in self.params]
        parts.append(UINT16.pack(len(self.result_formats)))
        parts += [INT16.pack(f) for f in self.result_formats]
        return frame(self.tag, b"".join(parts))


@dataclass(frozen=True, slots=True)
class Close:
    tag: ClassVar[bytes] = b"C"
    kind: str  # 'S' statement or 'P' portal
    name: str

    @classmethod
    def decode(cls, body: bytes) -> "Close":
        r = Reader(body)
        kind = chr(r.byte())
        name = r.cstring()
        r.end()
        if kind not in "SP":
            from .framing import ProtocolViolation

            raise ProtocolViolation(f"invalid Close target {kind!r}")
        return cls(kind, name)

    def encode(self) -> bytes:
        return frame(self.tag, self.kind.encode() + cstr(self.name))


@dataclass(frozen=True, slots=True)
class Describe:
    tag: ClassVar[bytes] = b"D"
    kind: str  # 'S' statement or 'P' portal
    name: str

    @classmethod
    def decode(cls, body: bytes) -> "Describe":
        r = Reader(body)
        kind = chr(r.byte())
        name = r.cstring()
        r.end()
        if kind not in "SP":
            from .framing import ProtocolViolation

            raise ProtocolViolation(f"invalid Describe target {kind!r}")
        return cls(kind, name)

    def encode(self) -> bytes:
        return frame(self.tag, self.kind.encode() + cstr(self.name))


@dataclass(frozen=True, slots=True)
class Execute:
    tag: ClassVar[bytes] = b"E"
    portal: str
    max_rows: int

    @classmethod
    def decode(cls, body: bytes) -> "Execute":
        r = Reader(body)
        portal, max_rows = r.cstring(), r.int32()
        r.end()
        return cls(portal, max_rows)

    def encode(self) -> bytes:
        return frame(self.tag, cstr(self.portal) + INT32.pack(self.max_rows))


@dataclass(frozen=True, slots=True)
class FunctionCall:
    tag: ClassVar[bytes] = b"F"
    oid: int
    arg_formats: tuple[int, ...]
    args: tuple[bytes | None, ...]
    result_format: int

    @classmethod
    def decode(cls, body: bytes) -> "FunctionCall":
        r = Reader(body)
        oid = r.int32()
        af = tuple(r.int16() for _ in range(r.count(item_min=2)))
        args = tuple(r.maybe_bytes() for _ in range(r.count(item_min=4)))
        rf = r.int16()
        r.end()
        return cls(oid, af, args, rf)

    def encode(self) -> bytes:
        parts = [INT32.pack(self.oid), UINT16.pack(len(self.arg_formats))]
        parts += [INT16.pack(f) for f in self.arg_formats]
        parts.append(UINT16.pack(len(self.args)))
        parts += [maybe_bytes(a) for a in self.args]
        parts.append(INT16.pack(self.result_format))
        return frame(self.tag, b"".join(parts))


@dataclass(frozen=True, slots=True)
class Parse:
    tag: ClassVar[bytes] = b"P"
    name: str
    query: str
    param_types: tuple[int, ...]

    @classmethod
    def decode(cls, body: bytes) -> "Parse":
        r = Reader(body)
        name, query = r.cstring(), r.cstring()
        types = tuple(r.uint32() for _ in range(r.count(item_min=4)))
        r.end()
        return cls(name, query, types)

    def encode(self) -> bytes:
        parts = [cstr(self.name), cstr(self.query), UINT16.pack(len(self.param_types))]
        parts += [INT32.pack(t) if t < 2**31 else INT32.pack(t - 2**32) for t in self.param_types]
        return frame(self.tag, b"".join(parts))


@dataclass(frozen=True, slots=True)
class Query:
    tag: ClassVar[bytes] = b"Q"
    sql: str

    @classmethod
    def decode(cls, body: bytes) -> "Query":
        r = Reader(body)
        sql = r.cstring()
        r.end()
        return cls(sql)

    def encode(self) -> bytes:
        return frame(self.tag, cstr(self.sql))


def query_sql(body: bytes) -> str:
    """``Query.decode(body).sql`` without the objects (the per-statement path of a governed session)."""
    end = body.find(b"\x00")
    if end < 0 or end != len(body) - 1:
        return Query.decode(body).sql  # unterminated, or bytes after the string: the decoder says which
    try:
        return body[:end].decode("utf-8")
    except UnicodeDecodeError:
        return Query.decode(body).sql  # raises the decoder's ProtocolViolation


def bind_statement(body: bytes) -> str:
    """The statement name of a Bind (its second string), without decoding the parameters."""
    portal_end = body.find(b"\x00")
    end = body.find(b"\x00", portal_end + 1)
    if portal_end < 0 or end < 0:
        return Bind.decode(body).statement  # malformed: let the full decoder raise
    return body[portal_end + 1:end].decode("utf-8", "replace")


def query_message(sql: str) -> bytes:
    """``Query(sql).encode()`` without the object."""
    text = sql.encode("utf-8")
    if b"\x00" in text:
        raise ValueError("protocol strings cannot contain NUL")
    return _QUERY_HEADER(b"Q", len(text) + 5) + text + b"\x00"


@dataclass(frozen=True, slots=True)
class PasswordMessage:
    """Tag 'p': the meaning depends on the authentication exchange in progress."""

    tag: ClassVar[bytes] = b"p"
    data: bytes

    @classmethod
    def decode(cls, body: bytes) -> "PasswordMessage":
        return cls(bytes(body))

    def encode(self) -> bytes:
        return frame(self.tag, self.data)

    def sasl_initial(self) -> tuple[str, bytes | None]:
        """Read as SASLInitialResponse: (mechanism, initial client response)."""
        r = Reader(self.data)
        mechanism = r.cstring()
        payload = r.maybe_bytes()
        r.end()
        return mechanism, payload

    def password(self) -> str:
        """Read as a cleartext PasswordMessage."""
        r = Reader(self.data)
        value = r.cstring()
        r.end()
        return value


Sync = empty_message("Sync", b"S")
Flush = empty_message("Flush", b"H")
Terminate = empty_message("Terminate", b"X")
CopyDone = empty_message("CopyDone", b"c")


@dataclass(frozen=True, slots=True)
class CopyFail:
    tag: ClassVar[bytes] = b"f"
    message: str

    @classmethod
    def decode(cls, body: bytes) -> "CopyFail":
        r = Reader(body)
        msg = r.cstring()
        r.end()
        return cls(msg)

    def encode(self) -> bytes:
        return frame(self.tag, cstr(self.message))


MESSAGES = {
    cls.tag: cls
    for cls in (Bind, Close, Describe, Execute, FunctionCall, Parse, Query, PasswordMessage, Sync, Flush, Terminate, CopyData, CopyDone, CopyFail)
}


def decode(tag: bytes, body: bytes):
    """The typed frontend message for a (tag, body) pair."""
    cls = MESSAGES.get(tag)
    return Unknown(tag, bytes(body)) if cls is None else cls.decode(body)
