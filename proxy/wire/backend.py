"""Backend (server to client) messages of protocol 3.0, one class each.

Authentication requests share tag 'R' and are told apart by their first Int32,
so they decode through ``decode_authentication``. Unknown tags come back as
``Unknown`` and re-encode byte-exact.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ._shared import CopyData, Unknown, empty_message
from ._fields import INT16, INT32, UINT16, UINT32, Reader, cstr, frame, maybe_bytes
from .framing import ProtocolViolation

# --- Authentication ('R') -------------------------------------------------------

AUTH_OK, AUTH_CLEARTEXT, AUTH_MD5, AUTH_GSS, AUTH_GSS_CONTINUE, AUTH_SSPI = 0, 3, 5, 7, 8, 9
AUTH_SASL, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL = 10, 11, 12


@dataclass(frozen=True, slots=True)
class Authentication:
    """Any AuthenticationXXX message: ``code`` says which, ``data`` is the rest."""

    tag: ClassVar[bytes] = b"R"
    code: int
    data: bytes = b""

    @classmethod
    def decode(cls, body: bytes) -> "Authentication":
        r = Reader(body)
        return cls(r.int32(), r.rest())

    def encode(self) -> bytes:
        return frame(self.tag, INT32.pack(self.code) + self.data)

    @classmethod
    def ok(cls) -> "Authentication":
        return cls(AUTH_OK)

    @classmethod
    def sasl(cls, mechanisms: list[str]) -> "Authentication":
        return cls(AUTH_SASL, b"".join(cstr(m) for m in mechanisms) + b"\x00")

    def sasl_mechanisms(self) -> list[str]:
        try:
            return [m.decode("utf-8") for m in self.data.split(b"\x00") if m]
        except UnicodeDecodeError:
            raise ProtocolViolation("invalid UTF-8 in SASL mechanism list") from None


@dataclass(frozen=True, slots=True)
class BackendKeyData:
    tag: ClassVar[bytes] = b"K"
    pid: int
    key: bytes  # 4 bytes in 3.0; up to 256 in 3.2

    @classmethod
    def decode(cls, body: bytes) -> "BackendKeyData":
        r = Reader(body)
        return cls(r.uint32(), r.rest())

    def encode(self) -> bytes:
        return frame(self.tag, UINT32.pack(self.pid) + self.key)


@dataclass(frozen=True, slots=True)
class ParameterStatus:
    tag: ClassVar[bytes] = b"S"
    name: str
    value: str

    @classmethod
    def decode(cls, body: bytes) -> "ParameterStatus":
        r = Reader(body)
        name, value = r.cstring(), r.cstring()
        r.end()
        return cls(name, value)

    def encode(self) -> bytes:
        return frame(self.tag, cstr(self.name) + cstr(self.value))


@dataclass(frozen=True, slots=True)
class ReadyForQuery:
    tag: ClassVar[bytes] = b"Z"
    status: str  # 'I' idle, 'T' in transaction, 'E' failed transaction

    @classmethod
    def decode(cls, body: bytes) -> "ReadyForQuery":
        r = Reader(body)
        status = chr(r.byte())
        r.end()
        return cls(status)

    def encode(self) -> bytes:
        return frame(self.tag, self.status.encode("latin-1"))  # one byte, whatever its value


# Field codes of ErrorResponse / NoticeResponse.
SEVERITY, SEVERITY_NONLOCALIZED, SQLSTATE, MESSAGE, DETAIL, HINT = "S", "V", "C", "M", "D", "H"


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    tag: ClassVar[bytes] = b"E"
    fields: tuple[tuple[str, str], ...]

    @classmethod
    def decode(cls, body: bytes) -> "ErrorResponse":
        r = Reader(body)
        out = []
        while True:
            code = r.byte()
            if code == 0:
                break
            out.append((chr(code), r.cstring()))
        r.end()
        return cls(tuple(out))

    def encode(self) -> bytes:
        # Field codes are single bytes (decoded with chr), so they re-encode as latin-1.
        return frame(self.tag, b"".join(k.encode("latin-1") + cstr(v) for k, v in self.fields) + b"\x00")

    @classmethod
    def build(cls, severity: str, sqlstate: str, message: str, detail: str | None = None, hint: str | None = None):
        fields = [(SEVERITY, severity), (SEVERITY_NONLOCALIZED, severity), (SQLSTATE, sqlstate), (MESSAGE, message)]
        if detail:
            fields.append((DETAIL, detail))
        if hint:
            fields.append((HINT, hint))
        return cls(tuple(fields))

    def get(self, code: str) -> str | None:
        for k, v in self.fields:
            if k == code:
                return v
        return None


@dataclass(frozen=True, slots=True)
class NoticeResponse(ErrorResponse):
    tag: ClassVar[bytes] = b"N"


@dataclass(frozen=True, slots=True)
class FieldDescription:
    name: str
    table_oid: int
    column: int
    type_oid: int
    type_size: int
    type_modifier: int
    format: int


@dataclass(frozen=True, slots=True)
class RowDescription:
    tag: ClassVar[bytes] = b"T"
    fields: tuple[FieldDescription, ...]

    @classmethod
    def decode(cls, body: bytes) -> "RowDescription":
        r = Reader(body)
        out = tuple(
            FieldDescription(r.cstring(), r.uint32(), r.int16(), r.uint32(), r.int16(), r.int32(), r.int16())
            for _ in range(r.count(item_min=19))
        )
        r.end()
        return cls(out)

    def encode(self) -> bytes:
        parts = [UINT16.pack(len(self.fields))]
        for f in self.fields:
            parts.append(cstr(f.name) + UINT32.pack(f.table_oid) + INT16.pack(f.column) + UINT32.pack(f.type_oid)
                         + INT16.pack(f.type_size) + INT32.pack(f.type_modifier) + INT16.pack(f.format))
        return frame(self.tag, b"".join(parts))


@dataclass(frozen=True, slots=True)
class DataRow:
    tag: ClassVar[bytes] = b"D"
    values: tuple[bytes | None, ...]

    @classmethod
    def decode(cls, body: bytes) -> "DataRow":
        r = Reader(body)
        values = tuple(r.maybe_bytes() for _ in range(r.count(item_min=4)))
        r.end()
        return cls(values)

    def encode(self) -> bytes:
        return frame(self.tag, UINT16.pack(len(self.values)) + b"".join(maybe_bytes(v) for v in self.values))


@dataclass(frozen=True, slots=True)
class CommandComplete:
    tag: ClassVar[bytes] = b"C"
    command_tag: str

    @classmethod
    def decode(cls, body: bytes) -> "CommandComplete":
        r = Reader(body)
        t = r.cstring()
        r.end()
        return cls(t)

    def encode(self) -> bytes:
        return frame(self.tag, cstr(self.command_tag))


@dataclass(frozen=True, slots=True)
class ParameterDescription:
    tag: ClassVar[bytes] = b"t"
    type_oids: tuple[int, ...]

    @classmethod
    def decode(cls, body: bytes) -> "ParameterDescription":
        r = Reader(body)
        oids = tuple(r.uint32() for _ in range(r.count(item_min=4)))
        r.end()
        return cls(oids)

    def encode(self) -> bytes:
        return frame(self.tag, UINT16.pack(len(self.type_oids)) + b"".join(UINT32.pack(o) for o in self.type_oids))


@dataclass(frozen=True, slots=True)
class CopyResponse:
    """CopyInResponse ('G'), CopyOutResponse ('H') and CopyBothResponse ('W')."""

    tag: bytes
    format: int
    column_formats: tuple[int, ...]

    @classmethod
    def decode_tagged(cls, tag: bytes, body: bytes) -> "CopyResponse":
        r = Reader(body)
        fmt = r.byte()
        cols = tuple(r.int16() for _ in range(r.count(item_min=2)))
        r.end()
        return cls(tag, fmt, cols)

    def encode(self) -> bytes:
        return frame(self.tag, bytes([self.format]) + UINT16.pack(len(self.column_formats))
                     + b"".join(INT16.pack(c) for c in self.column_formats))


@dataclass(frozen=True, slots=True)
class NotificationResponse:
    tag: ClassVar[bytes] = b"A"
    pid: int
    channel: str
    payload: str

    @classmethod
    def decode(cls, body: bytes) -> "NotificationResponse":
        r = Reader(body)
        pid, channel, payload = r.uint32(), r.cstring(), r.cstring()
        r.end()
        return cls(pid, channel, payload)

    def encode(self) -> bytes:
        return frame(self.tag, UINT32.pack(self.pid) + cstr(self.channel) + cstr(self.payload))


@dataclass(frozen=True, slots=True)
class FunctionCallResponse:
    tag: ClassVar[bytes] = b"V"
    value: bytes | None

    @classmethod
    def decode(cls, body: bytes) -> "FunctionCallResponse":
        r = Reader(body)
        v = r.maybe_bytes()
        r.end()
        return cls(v)

    def encode(self) -> bytes:
        return frame(self.tag, maybe_bytes(self.value))


@dataclass(frozen=True, slots=True)
class NegotiateProtocolVersion:
    """The server's answer to a newer minor version or unknown ``_pq_.`` options.

    ``version`` is a whole protocol version number (major << 16 | minor), which
    is what PostgreSQL sends and libpq checks (the docs' "newest minor
    protocol version" notwithstanding): 0 reads as a downgrade to protocol 0.0.
    """

    tag: ClassVar[bytes] = b"v"
    version: int
    unrecognized_options: tuple[str, ...] = field(default=())

    @classmethod
    def decode(cls, body: bytes) -> "NegotiateProtocolVersion":
        r = Reader(body)
        minor = r.int32()
        opts = tuple(r.cstring() for _ in range(r.count(width=4, item_min=1)))
        r.end()
        return cls(minor, opts)

    def encode(self) -> bytes:
        return frame(self.tag, INT32.pack(self.version) + INT32.pack(len(self.unrecognized_options))
                     + b"".join(cstr(o) for o in self.unrecognized_options))


ParseComplete = empty_message("ParseComplete", b"1")
BindComplete = empty_message("BindComplete", b"2")
CloseComplete = empty_message("CloseComplete", b"3")
NoData = empty_message("NoData", b"n")
PortalSuspended = empty_message("PortalSuspended", b"s")
EmptyQueryResponse = empty_message("EmptyQueryResponse", b"I")
CopyDone = empty_message("CopyDone", b"c")


MESSAGES = {
    cls.tag: cls
    for cls in (Authentication, BackendKeyData, ParameterStatus, ReadyForQuery, ErrorResponse, NoticeResponse,
                RowDescription, DataRow, CommandComplete, ParameterDescription, NotificationResponse,
                FunctionCallResponse, NegotiateProtocolVersion, CopyData, ParseComplete, BindComplete,
                CloseComplete, NoData, PortalSuspended, EmptyQueryResponse, CopyDone)
}
COPY_RESPONSE_TAGS = (b"G", b"H", b"W")


def decode(tag: bytes, body: bytes):
    """The typed backend message for a (tag, body) pair."""
    if tag in COPY_RESPONSE_TAGS:
        return CopyResponse.decode_tagged(tag, body)
    cls = MESSAGES.get(tag)
    return Unknown(tag, bytes(body)) if cls is None else cls.decode(body)


def error(sqlstate: str, message: str, *, severity: str = "ERROR", detail: str | None = None, hint: str | None = None) -> bytes:
    """An encoded ErrorResponse: the one way the proxy speaks errors."""
    return ErrorResponse.build(severity, sqlstate, message, detail, hint).encode()
