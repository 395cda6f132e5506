"""A throwaway PostgreSQL cluster with TLS, from the system's packages, for backend-TLS tests.

The bundled embedded server is built without OpenSSL, so TLS towards the backend
is tested against the distribution's PostgreSQL when one is installed.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from proxy.dsn import BackendTarget

RUN_AS = "embedded_postgres"  # a non-root account (PostgreSQL refuses to run as root)
SERVICE_USER = "pgveil_service"
SERVICE_PASSWORD = "tls-service-pw"
DATABASE = "postgres"


@dataclass
class TlsPostgres:
    host: str
    port: int
    base: Path
    bindir: Path
    service_user: str = SERVICE_USER
    service_password: str = SERVICE_PASSWORD
    database: str = DATABASE

    def target(self, sslmode: str = "require") -> BackendTarget:
        return BackendTarget(self.host, self.port, self.service_user, self.database, sslmode)

    def stop(self) -> None:
        subprocess.run([str(self.bindir / "pg_ctl"), "-D", str(self.base / "data"), "-m", "immediate", "-w", "stop"],
                       user=self._user(), capture_output=True, timeout=60)
        shutil.rmtree(self.base, ignore_errors=True)

    @staticmethod
    def _user():
        return RUN_AS if os.geteuid() == 0 else None


def _bindir() -> Path | None:
    for initdb in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True):
        return Path(initdb).parent
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cert_files) -> TlsPostgres | None:
    bindir = _bindir()
    if bindir is None:
        return None
    user = RUN_AS if os.geteuid() == 0 else None
    if user:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            return None
    base = Path(tempfile.mkdtemp(prefix="pgveil-tls-pg-"))
    base.chmod(0o755)
    data = base / "data"
    pwfile = base / "pw"
    pwfile.write_text(SERVICE_PASSWORD + "\n")
    if user:
        os.chown(base, entry.pw_uid, entry.pw_gid)
        os.chown(pwfile, entry.pw_uid, entry.pw_gid)
    subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
                    "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8", "--locale=C"],
                   user=user, check=True, capture_output=True, timeout=120)
    for src, name in zip(cert_files, ("server.crt", "server.key")):
        dst = data / name
        shutil.copy(src, dst)
        if user:
            os.chown(dst, entry.pw_uid, entry.pw_gid)
        dst.chmod(0o600)
    port = _free_port()
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(f"\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{base}'\n"
                   "ssl = on\nfsync = off\n")
    subprocess.run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "start"],
                   user=user, check=True, capture_output=True, timeout=120)
    sql = f"CREATE ROLE {SERVICE_USER} LOGIN PASSWORD '{SERVICE_PASSWORD}'"
    subprocess.run([str(bindir / "psql"), "-h", str(base), "-p", str(port), "-U", "postgres", "-d", DATABASE,
                    "-v", "ON_ERROR_STOP=1", "-c", sql], user=user, check=True, capture_output=True, timeout=60)
    return TlsPostgres("127.0.0.1", port, base, bindir)
