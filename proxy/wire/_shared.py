"""Message shapes both directions share: field-less messages, CopyData, unknown messages."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ._fields import frame
from .framing import ProtocolViolation


def empty_message(name: str, tag_value: bytes) -> type:
    """A class for a message that is only its tag (Sync, ParseComplete, ...)."""

    @dataclass(frozen=True, slots=True)
    class _Empty:
        tag: ClassVar[bytes] = tag_value

        @classmethod
        def decode(cls, body: bytes):
            if body:
                raise ProtocolViolation(f"{name} carries no fields")
            return cls()

        def encode(self) -> bytes:
            return frame(self.tag, b"")

    _Empty.__name__ = _Empty.__qualname__ = name
    return _Empty


@dataclass(frozen=True, slots=True)
class CopyData:
    tag: ClassVar[bytes] = b"d"
    data: bytes

    @classmethod
    def decode(cls, body: bytes) -> "CopyData":
        return cls(bytes(body))

    def encode(self) -> bytes:
        return frame(self.tag, self.data)


@dataclass(frozen=True, slots=True)
class Unknown:
    """A message this codec does not know; kept byte-exact."""

    tag: bytes
    body: bytes

    def encode(self) -> bytes:
        return frame(self.tag, self.body)
