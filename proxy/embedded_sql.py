"""SQL inside the bundled PostgreSQL, through its psql over the unix socket.

What it does: run a script as the superuser (:func:`run_sql`), keep the
superuser and ``pgveil_service`` roles and the requested databases as they
should be, and grant the service role read access (:func:`grant_read`).
Passwords are sent as SCRAM verifiers computed here, never as plaintext.

What it must not touch: processes and files of the server (``embedded_host``).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import subprocess
from pathlib import Path

from .embedded_host import (SERVICE_USER, SUPERUSER, EmbeddedError, EmbeddedInfo, _RunAs, _run_as,
                            _socket_dir_for, embedded_binary)


def _scram_verifier(password: str, iterations: int = 4096) -> str:
    """A SCRAM-SHA-256 verifier as PostgreSQL stores it, so plaintext never reaches the server."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = _hmac(salted, b"Client Key")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = _hmac(salted, b"Server Key")
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _hmac(key: bytes, msg: bytes) -> bytes:
    import hmac

    return hmac.new(key, msg, hashlib.sha256).digest()


def run_sql(
    info_or_data_dir: EmbeddedInfo | Path,
    sql: str,
    *,
    dbname: str = "postgres",
    variables: dict[str, str] | None = None,
) -> str:
    """Run ``sql`` as the superuser over the unix socket with ``psql``; return its stdout.

    The script is fed on stdin (not argv, which other users can read in ``ps``);
    ``variables`` become psql variables (use ``:'name'`` / ``:"name"`` to quote).
    """
    if isinstance(info_or_data_dir, EmbeddedInfo):
        data_dir, socket_dir, port = info_or_data_dir.data_dir, info_or_data_dir.socket_dir, info_or_data_dir.port
    else:
        data_dir = Path(info_or_data_dir)
        socket_dir = _socket_dir_for(data_dir)
        port = int((data_dir / "port").read_text())
    return _psql(socket_dir, port, _run_as(), sql, dbname=dbname, variables=variables)


def _psql(
    socket_dir: Path,
    port: int,
    run_as: _RunAs,
    sql: str,
    *,
    dbname: str = "postgres",
    variables: dict[str, str] | None = None,
) -> str:
    args = [
        str(embedded_binary("psql")),
        "-X", "-q", "-A", "-t",
        "-v", "ON_ERROR_STOP=1",
        "-h", str(socket_dir),
        "-p", str(port),
        "-U", SUPERUSER,
        "-d", dbname,
        "-f", "-",
    ]
    # Variables go in on stdin too: some are password verifiers, and argv is public.
    preamble = "".join(f"\\set {k} {_psql_quote(v)}\n" for k, v in (variables or {}).items())
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGAPPNAME"] = "pgveil-embedded"
    proc = subprocess.run(args, input=preamble + sql, capture_output=True, text=True, env=env, cwd="/", **run_as.kwargs())
    if proc.returncode != 0:
        raise EmbeddedError(f"psql failed on database {dbname!r}: {proc.stderr.strip()}")
    return proc.stdout


def _psql_quote(value: str) -> str:
    """Quote a psql meta-command argument (single quotes; psql reads C-style escapes inside)."""
    if "\n" in value or "\r" in value:
        raise ValueError(f"newline in a psql variable: {value!r}")
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


_ROLES_SQL = r"""
SELECT set_config('client_min_messages', 'warning', false);
ALTER ROLE postgres PASSWORD :'super_verifier';
SELECT format('CREATE ROLE %I LOGIN', :'service') WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'service')
\gexec
-- Least privilege, re-asserted every time (someone may have widened it by hand).
ALTER ROLE :"service" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'service_verifier';
"""


def _ensure_roles_and_dbs(
    socket_dir: Path, port: int, run_as: _RunAs, superuser_password: str, service_password: str, databases: list[str]
) -> None:
    script = _ROLES_SQL
    variables = {
        "service": SERVICE_USER,
        "super_verifier": _scram_verifier(superuser_password),
        "service_verifier": _scram_verifier(service_password),
    }
    for i, db in enumerate(databases):
        variables[f"db{i}"] = db
        # CREATE DATABASE cannot run inside a function or transaction block: build it and \gexec.
        script += (
            f"SELECT format('CREATE DATABASE %I', :'db{i}') "
            f"WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db{i}')\n\\gexec\n"
        )
    _psql(socket_dir, port, run_as, script, variables=variables)


# --------------------------------------------------------------------------- public API



_GRANT_READ_SQL = r"""
SELECT set_config('client_min_messages', 'warning', false);
GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO :"role";
GRANT USAGE ON SCHEMA :"schema" TO :"role";
GRANT SELECT ON ALL TABLES IN SCHEMA :"schema" TO :"role";
-- Future tables created by the superuser (how data gets loaded here) or by the schema's owner.
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA :"schema" GRANT SELECT ON TABLES TO :"role";
SELECT format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA %I GRANT SELECT ON TABLES TO %I',
              pg_get_userbyid(nspowner), nspname, :'role')
  FROM pg_namespace WHERE nspname = :'schema' AND pg_get_userbyid(nspowner) <> 'postgres'
\gexec
"""


def grant_read(info: EmbeddedInfo, dbname: str, schema: str = "public") -> None:
    """Grant the service role read access to ``schema`` in ``dbname``, now and for future tables.

    Exactly what the architecture asks of the backend role: USAGE on the schema,
    SELECT on its tables, TEMP (and CONNECT) on the database.
    """
    run_sql(info, _GRANT_READ_SQL, dbname=dbname, variables={"db": dbname, "schema": schema, "role": info.service_user})
