"""The processes a pgbench comparison needs: PostgreSQL, PgBouncer, pgveil and a bare relay.

What it does: start each on a free loopback port (registering its cleanup on
an ExitStack), wait until it accepts, and return how to reach it.
What it must not touch: the measurements (``bench.pgbench``) and their report.
"""
from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path


DB = "pgbench"
PGVEIL_USER = "bench"
MODES = ("simple", "extended", "prepared")
TARGETS = ("direct", "pgbouncer", "pgveil", "pgveil-governed")
# On request: a bare uvloop byte relay (the ceiling of any Python proxy here), and pgveil with the audit on
# (the unrestricted user, one JSON-lines record per statement written to the run's directory).
EXTRA_TARGETS = ("relay", "pgveil-audited")
PGBOUNCER_MISSING = "pgbouncer not found (apt-get install pgbouncer): skipping the PgBouncer column"
REPO = Path(__file__).resolve().parent.parent


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _stop_process(proc: subprocess.Popen, name: str, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    """Stop a child we started (by its own pid only), escalating to SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        say(f"{name} did not stop in {timeout:.0f}s: killing pid {proc.pid}")
        proc.kill()
        proc.wait(5)


def _wait_until(check, what: str, proc: subprocess.Popen | None, log: Path | None, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with code {proc.returncode} before it was ready:\n{tail}")
        time.sleep(0.1)
    raise RuntimeError(f"{what} was not ready after {timeout:.0f}s")


# --------------------------------------------------------------------------- PostgreSQL


@dataclass
class Postgres:
    host: str
    port: int
    superuser: str
    superuser_password: str
    role: str  # the least-privileged role every target logs in as
    role_password: str
    version: str


def start_postgres(data_dir: Path, scale: int, stack: ExitStack) -> Postgres:
    from proxy.embedded import embedded_binary, ensure_embedded, grant_read, run_sql, stop_embedded

    say(f"starting embedded PostgreSQL in {data_dir}")
    info = ensure_embedded(data_dir, databases=[DB], fast_unsafe=True)
    stack.callback(lambda: (say("stopping embedded PostgreSQL"), stop_embedded(data_dir)))
    out = subprocess.run([str(embedded_binary("postgres")), "--version"], capture_output=True, text=True).stdout
    version = "PostgreSQL " + out.split()[-1]  # "postgres (PostgreSQL) 18.6"
    pg = Postgres(info.host, info.port, info.superuser, info.superuser_password, info.service_user,
                  info.service_password, version)

    have = run_sql(info, "SELECT count(*) FROM pg_class WHERE relname = 'pgbench_branches' AND relkind = 'r'", dbname=DB)
    current = int(run_sql(info, "SELECT count(*) FROM pgbench_branches", dbname=DB)) if int(have) else 0
    if current != scale:
        say(f"pgbench -i -s {scale} (a minute or so)")
        t0 = time.monotonic()
        proc = subprocess.run(
            [str(embedded_binary("pgbench")), "-i", "-q", "-s", str(scale), "-h", pg.host, "-p", str(pg.port),
             "-U", pg.superuser, DB],
            env=_pg_env(pg.superuser_password), capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"pgbench -i failed:\n{proc.stdout}{proc.stderr}")
        say(f"loaded in {time.monotonic() - t0:.0f}s")
    else:
        say(f"reusing pgbench data at scale {scale}")
    grant_read(info, DB)
    run_sql(info, "VACUUM ANALYZE", dbname=DB)
    return pg


def _postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _pg_env(password: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = password
    env["PGSSLMODE"] = "disable"
    return env


# --------------------------------------------------------------------------- PgBouncer


def _allow_traversal(path: Path) -> None:
    """Give others search (x) permission on ``path`` and its ancestors, nothing more."""
    for p in [path, *path.parents]:
        mode = p.stat().st_mode
        if not mode & 0o001:
            p.chmod((mode & 0o7777) | 0o001)


def _service_account() -> pwd.struct_passwd | None:
    """PgBouncer refuses to run as root: run it as the embedded server's system user."""
    if os.geteuid() != 0:
        return None
    from proxy.embedded import SYSTEM_USER

    return pwd.getpwnam(SYSTEM_USER)


def start_pgbouncer(pg: Postgres, workdir: Path, stack: ExitStack) -> tuple[int, str, int] | None:
    exe = shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer") if os.access(p, os.X_OK)), None)
    if exe is None:
        print(PGBOUNCER_MISSING, flush=True)
        return None
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.splitlines()[0].strip()
    port = _free_port()
    workdir.mkdir(mode=0o700)
    (workdir / "userlist.txt").write_text(f'"{pg.role}" "{pg.role_password}"\n')
    (workdir / "pgbouncer.ini").write_text(
        f"""[databases]
{DB} = host={pg.host} port={pg.port} dbname={DB}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {workdir / 'userlist.txt'}
pool_mode = session
max_client_conn = 200
default_pool_size = 100
server_tls_sslmode = disable
logfile = {workdir / 'pgbouncer.log'}
pidfile = {workdir / 'pgbouncer.pid'}
log_connections = 0
log_disconnections = 0
"""
    )
    account = _service_account()
    kwargs: dict = {}
    if account is not None:
        for p in (workdir, *workdir.iterdir()):
            os.chown(p, account.pw_uid, account.pw_gid)
        kwargs = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        _allow_traversal(workdir.parent)
    for p in workdir.iterdir():
        p.chmod(0o600)
    log = workdir / "pgbouncer.stderr"
    with open(log, "wb") as out:
        proc = subprocess.Popen([exe, str(workdir / "pgbouncer.ini")], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=workdir, **kwargs)
    # SIGINT is PgBouncer's "safe shutdown" (waits for clients); SIGTERM is immediate.
    stack.callback(lambda: (say("stopping PgBouncer"), _stop_process(proc, "pgbouncer")))
    _wait_until(lambda: _accepts(port), "pgbouncer", proc, log)
    say(f"{version} (pid {proc.pid}) on port {port}, pool_mode=session")
    return port, version, proc.pid


# --------------------------------------------------------------------------- pgveil


#: The governed case: the benchmark user reads the pgbench tables through an access policy, a row filter
#: that keeps every row (so tps stay comparable) and a constant mask on ``filler``, so every
#: ``SELECT abalance FROM pgbench_accounts WHERE aid = N`` is rewritten into a policy view.
GOVERNED_POLICIES = """
tables:
  public.pgbench_accounts: {key: aid}
policies:
  - name: bench-read
    access:
      tables: [public.pgbench_accounts, public.pgbench_branches, public.pgbench_tellers, public.pgbench_history]
      allow: {users: [%(user)s]}
  - name: bench-rows
    row_filter: {table: public.pgbench_accounts, where: "bid > 0", for: {users: [%(user)s]}}
  - name: bench-filler
    mask: {column: public.pgbench_accounts.filler, type: constant, value: "-", for: {users: [%(user)s]}}
"""


def start_pgveil(pg: Postgres, workdir: Path, stack: ExitStack, governed: bool = False,
                 repo: Path | None = None, audited: bool = False) -> tuple[int, int, str]:
    """pgveil as its own process; ``repo``: run another checkout's code (``--baseline``), default this one."""
    workdir.mkdir(mode=0o700)
    password = secrets.token_urlsafe(18)
    config = workdir / "pgveil.yaml"
    user = f"""  {PGVEIL_USER}:
    password_env: PGVEIL_BENCH_USER_PASSWORD
""" + ("" if governed else "    unrestricted: true\n")
    config.write_text(
        f"""# generated by bench/pgbench.py
listen: {{host: 127.0.0.1, port: 0}}
backend:
  dsn: postgresql://{pg.role}@{pg.host}:{pg.port}/{DB}
  password_env: PGVEIL_BENCH_BACKEND_PASSWORD
users:
{user}""" + (GOVERNED_POLICIES % {"user": PGVEIL_USER} if governed else "")
        + (f"audit: {{path: {workdir / 'audit'}}}\n" if audited else "")
    )
    env = dict(os.environ, PGVEIL_BENCH_BACKEND_PASSWORD=pg.role_password, PGVEIL_BENCH_USER_PASSWORD=password)
    if repo is not None:  # its own code first, whatever is installed or on PYTHONPATH
        env["PYTHONPATH"] = os.pathsep.join([str(repo)] + [p for p in [env.get("PYTHONPATH")] if p])
    log = workdir / "pgveil.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--config", str(config)], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=repo or REPO,
                                start_new_session=True)
    name = ("pgveil-governed" if governed else "pgveil-audited" if audited else "pgveil") + ("@base" if repo is not None else "")
    stack.callback(lambda: (say(f"stopping {name}"), _stop_process(proc, name)))

    def listening() -> int | None:
        m = re.search(r"pgveil: listening on [^\s]+:(\d+)", log.read_text(errors="replace"))
        return int(m.group(1)) if m and _accepts(int(m.group(1))) else None

    port = _wait_until(listening, name, proc, log)
    from proxy import __version__

    say(f"{name} {__version__} (pid {proc.pid}) on port {port}")
    return port, proc.pid, password


GOVERNED_SAMPLE = "SELECT abalance FROM pgbench_accounts WHERE aid = 4711"


def explain_governed(pg: Postgres, port: int, password: str) -> str:
    """The governed rewrite of pgbench's statement, and its plan (EXPLAIN as the superuser, directly)."""
    import asyncio

    import asyncpg

    async def go() -> str:
        veil = await asyncpg.connect(host="127.0.0.1", port=port, user=PGVEIL_USER, password=password, database=DB,
                                     ssl=False, statement_cache_size=0)
        try:
            await veil.fetchval(GOVERNED_SAMPLE)  # checks it runs through pgveil
        finally:
            await veil.close()
        from rewrite import RewriteContext, Rewritten, rewrite_sql
        from rewrite.decide import PolicySet, Subject
        from rewrite.policy import PolicyConfig
        from proxy.catalog import load_catalog

        import yaml

        su = await asyncpg.connect(host=pg.host, port=pg.port, user=pg.superuser, password=pg.superuser_password,
                                   database=DB, ssl=False)
        try:
            policy = PolicyConfig.model_validate(dict(yaml.safe_load(GOVERNED_POLICIES % {"user": PGVEIL_USER}),
                                                      users={PGVEIL_USER: {"password_env": "X"}}))
            catalog = await load_catalog(su)
            ctx = RewriteContext(Subject(PGVEIL_USER), PolicySet.from_config(policy), catalog, None, ("public",),
                                 policy.tags)
            verdict = rewrite_sql(GOVERNED_SAMPLE, ctx)
            if not isinstance(verdict, Rewritten):
                return f"{GOVERNED_SAMPLE}: not rewritten ({verdict})"
            plan = await su.fetch("EXPLAIN " + verdict.sql)
            return (f"rewritten ({'fence lifted' if verdict.plan.fence_lifted else 'fenced' if verdict.plan.fenced else 'no fence'}):"
                    f"\n  {verdict.sql}\nplan:\n" + "\n".join("  " + r[0] for r in plan))
        finally:
            await su.close()

    return asyncio.run(go())


# --------------------------------------------------------------------------- bare relay (reference)


def _relay_server(listen_port: int, host: str, port: int) -> None:
    """A byte relay with no parsing at all, on uvloop: what a Python proxy costs at the very least."""
    import asyncio

    class Backend(asyncio.Protocol):
        def __init__(self, front):
            self.front = front

        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.front.transport.write(data)

        def connection_lost(self, exc):
            self.front.transport.close()

    class Front(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport, self.backend, self.pending = transport, None, []
            asyncio.get_running_loop().create_task(self.connect())

        async def connect(self):
            _, self.backend = await asyncio.get_running_loop().create_connection(lambda: Backend(self), host, port)
            for data in self.pending:
                self.backend.transport.write(data)

        def data_received(self, data):
            if self.backend is None:
                self.pending.append(data)
            else:
                self.backend.transport.write(data)

        def connection_lost(self, exc):
            if self.backend is not None:
                self.backend.transport.close()

    async def serve():
        await asyncio.get_running_loop().create_server(Front, "127.0.0.1", listen_port)
        await asyncio.Event().wait()

    from proxy.runner import install_event_loop_policy

    install_event_loop_policy()
    asyncio.run(serve())


def start_relay(pg: Postgres, stack: ExitStack) -> tuple[int, int]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.pgbench", "--relay-server", str(port), pg.host, str(pg.port)],
                            stdin=subprocess.DEVNULL, cwd=REPO, start_new_session=True)
    stack.callback(lambda: (say("stopping relay"), _stop_process(proc, "relay")))
    _wait_until(lambda: _accepts(port), "relay", proc, None)
    say(f"bare uvloop relay (pid {proc.pid}) on port {port}")
    return port, proc.pid


