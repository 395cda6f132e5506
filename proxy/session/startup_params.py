"""Which client startup parameters reach the backend, and which are refused.

Parser- and security-relevant settings are pinned by pgveil (threats 9 and 10):
the client may not choose its search_path, role, string-escape behaviour or a
multi-byte client encoding whose trailing bytes can look like quotes. Harmless
presentation settings pass through; pgveil's own ``pgveil.purpose`` and
``pgveil.project`` are taken out for the session and never sent on.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# Settings a client may choose at startup (lower-cased names).
HARMLESS_SETTINGS = frozenset({
    "application_name", "datestyle", "timezone", "intervalstyle", "extra_float_digits", "bytea_output",
    "statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout", "idle_session_timeout",
    "client_min_messages", "geqo", "jit", "work_mem", "default_transaction_isolation",
    "default_transaction_deferrable", "lc_messages", "lc_monetary", "lc_numeric", "lc_time",
    "transaction_timeout", "xmloption",
})
PGVEIL_SETTINGS = frozenset({"pgveil.purpose", "pgveil.project"})
# Encodings in which every byte < 0x80 is ASCII: the proxy's UTF-8 reading of the
# SQL text is then the server's. Only UTF8 is spoken to the backend.
ACCEPTED_CLIENT_ENCODINGS = frozenset({"utf8", "unicode", "sqlascii"})
# What every backend session is pinned to, whatever the client asked.
PINNED = {
    "client_encoding": "UTF8",
    "options": "-c standard_conforming_strings=on -c search_path=public -c backslash_quote=safe_encoding",
}


def _encoding_ok(value: str) -> bool:
    """Compare as PostgreSQL does: case and punctuation ignored ('utf-8' is UTF8); quotes allowed."""
    return "".join(ch for ch in value.lower() if ch.isalnum()) in ACCEPTED_CLIENT_ENCODINGS


class StartupRefused(Exception):
    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@dataclass
class StartupChoice:
    backend_params: dict[str, str] = field(default_factory=dict)
    pgveil: dict[str, str] = field(default_factory=dict)  # pgveil.purpose / pgveil.project


def parse_options(options: str) -> list[tuple[str, str]]:
    """Split libpq's ``options`` (``-c a=b --c=d``, backslash escapes spaces) into settings."""
    tokens: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in options:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch.isspace():
            if current:
                tokens.append("".join(current))
                current = []
        else:
            current.append(ch)
    if current:
        tokens.append("".join(current))
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "-c" and i + 1 < len(tokens):
            setting = tokens[i + 1]
            i += 2
        elif tok.startswith("-c") and len(tok) > 2:
            setting, i = tok[2:], i + 1
        elif tok.startswith("--") and "=" in tok:
            setting, i = tok[2:], i + 1
        else:
            raise StartupRefused("42501", f"startup option {tok!r} is not allowed through pgveil (only -c name=value)")
        name, sep, value = setting.partition("=")
        if not sep or not name:
            raise StartupRefused("42601", f"invalid startup option {setting!r}: expected name=value")
        out.append((name.replace("-", "_"), value))
    return out


def choose(params: dict[str, str]) -> StartupChoice:
    """Split the client's startup parameters (user/database/replication already removed)."""
    choice = StartupChoice()
    settings: list[tuple[str, str]] = []
    for name, value in params.items():
        if name == "options":
            settings += parse_options(value)
        elif name == "client_encoding":
            if not _encoding_ok(value):
                raise StartupRefused("22023", f"pgveil speaks UTF8 only: client_encoding {value!r} is not supported")
        else:
            settings.append((name, value))
    for name, value in settings:
        key = name.lower()
        if key in PGVEIL_SETTINGS:
            choice.pgveil[key] = value
        elif key in HARMLESS_SETTINGS:
            choice.backend_params[name] = value
        elif key == "client_encoding":
            if not _encoding_ok(value):
                raise StartupRefused("22023", f"pgveil speaks UTF8 only: client_encoding {value!r} is not supported")
        else:
            raise StartupRefused("42501", f"setting {name!r} cannot be chosen at startup through pgveil")
    choice.backend_params.update(PINNED)
    return choice
