"""The untyped first packet of a connection: StartupMessage and its siblings.

SSLRequest, GSSENCRequest and CancelRequest share the startup framing and are
told apart by the magic number where a protocol version would be.
"""
from __future__ import annotations

from dataclasses import dataclass

from ._fields import UINT32, Reader, cstr
from .framing import ProtocolViolation

SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102
PROTOCOL_3_0 = 3 << 16
PROTOCOL_3_2 = (3 << 16) | 2


@dataclass(frozen=True, slots=True)
class StartupMessage:
    version: int
    params: dict[str, str]

    @property
    def major(self) -> int:
        return self.version >> 16

    @property
    def minor(self) -> int:
        return self.version & 0xFFFF

    def encode(self) -> bytes:
        body = UINT32.pack(self.version) + b"".join(cstr(k) + cstr(v) for k, v in self.params.items()) + b"\x00"
        return UINT32.pack(len(body) + 4) + body


@dataclass(frozen=True, slots=True)
class SSLRequest:
    def encode(self) -> bytes:
        return UINT32.pack(8) + UINT32.pack(SSL_REQUEST_CODE)


@dataclass(frozen=True, slots=True)
class GSSENCRequest:
    def encode(self) -> bytes:
        return UINT32.pack(8) + UINT32.pack(GSSENC_REQUEST_CODE)


@dataclass(frozen=True, slots=True)
class CancelRequest:
    pid: int
    key: bytes

    def encode(self) -> bytes:
        body = UINT32.pack(CANCEL_REQUEST_CODE) + UINT32.pack(self.pid) + self.key
        return UINT32.pack(len(body) + 4) + body


def decode(body: bytes):
    """Decode a startup-framed packet body (its length prefix already removed)."""
    r = Reader(body)
    code = r.uint32()
    if code == SSL_REQUEST_CODE:
        r.end()
        return SSLRequest()
    if code == GSSENC_REQUEST_CODE:
        r.end()
        return GSSENCRequest()
    if code == CANCEL_REQUEST_CODE:
        pid = r.uint32()
        key = r.rest()
        if not 4 <= len(key) <= 256:
            raise ProtocolViolation("invalid cancel key length")
        return CancelRequest(pid, key)
    if code >> 16 != 3:
        raise ProtocolViolation(f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}")
    params: dict[str, str] = {}
    while True:
        name = r.cstring()
        if not name:
            break
        if name in params:
            raise ProtocolViolation(f"duplicate startup parameter {name!r}")
        params[name] = r.cstring()
    r.end()
    return StartupMessage(code, params)
