"""pgbench through pgveil, next to PgBouncer and direct PostgreSQL.

    python -m bench.pgbench [--seconds 10] [--rounds 3] [--clients 8] [--json out.json]

What it does, all on this machine and all cleaned up on exit (also on Ctrl-C):

1. starts the bundled (embedded) PostgreSQL in a temporary data dir (fsync off),
   creates database ``pgbench`` and loads it with ``pgbench -i -s <scale>``
   (as the superuser), then grants the least-privileged service role
   ``pgveil_service`` read access, as a real pgveil deployment would;
2. starts PgBouncer, if the ``pgbouncer`` program is installed, in *session*
   pooling (one server connection per client, like pgveil), SCRAM auth from an
   auth_file, talking to PostgreSQL over TCP;
3. starts pgveil as its own process (``python -m proxy serve``, uvloop) with a
   generated config: one unrestricted user, backend = the same server and role;
4. runs the bundled ``pgbench -S -n -c <clients> -j <jobs> -T <seconds> -M <mode>``
   for modes simple, extended and prepared against the three targets,
   interleaved over several rounds (the order rotates every round), and
   prints the median tps and median average latency per (mode, target) with
   the ratios to direct PostgreSQL and to PgBouncer.

Every target is reached as the same role over TCP on 127.0.0.1 without TLS,
so the only difference is the hop in between. pgbench connects once per client
(no ``-C``), so authentication is not part of the measured time.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import pwd
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

DB = "pgbench"
PGVEIL_USER = "bench"
MODES = ("simple", "extended", "prepared")
TARGETS = ("direct", "pgbouncer", "pgveil", "pgveil-governed")
EXTRA_TARGETS = ("relay",)  # on request: a bare uvloop byte relay, the ceiling of any Python proxy here
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


def start_pgveil(pg: Postgres, workdir: Path, stack: ExitStack, governed: bool = False) -> tuple[int, int, str]:
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
    )
    env = dict(os.environ, PGVEIL_BENCH_BACKEND_PASSWORD=pg.role_password, PGVEIL_BENCH_USER_PASSWORD=password)
    log = workdir / "pgveil.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--config", str(config)], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=REPO,
                                start_new_session=True)
    name = "pgveil-governed" if governed else "pgveil"
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


# --------------------------------------------------------------------------- other load


class OtherLoad:
    """Share of the machine's CPU used, during a run, by processes that are not the benchmark's.

    Machine-wide busy time (``/proc/stat``) minus what our own process trees used:
    this script and its reaped children (pgbench), PgBouncer, pgveil, and the
    postmaster with its backends (live ones, and exited ones through the
    postmaster's children times). On a shared machine a run where others took a
    big share is not comparable with the rest; the report shows the share.
    """

    def __init__(self) -> None:
        self.roots: list[int] = []
        self._t0: tuple[float, float, float] | None = None
        try:
            import psutil

            self._psutil = psutil
            self._tick = os.sysconf("SC_CLK_TCK")
        except (ImportError, ValueError, OSError):
            self._psutil = None

    def _busy(self) -> float:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
        return (sum(fields[:8]) - fields[3] - fields[4]) / self._tick

    def _ours(self) -> float:
        import resource

        total = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            ru = resource.getrusage(who)
            total += ru.ru_utime + ru.ru_stime
        for pid in self.roots:
            try:
                root = self._psutil.Process(pid)
                t = root.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
                for child in root.children(recursive=True):
                    try:
                        c = child.cpu_times()
                        total += c.user + c.system
                    except self._psutil.Error:
                        pass
            except self._psutil.Error:
                pass
        return total

    def _descendants(self) -> int:
        n = 0
        for pid in self.roots:
            try:
                n += len(self._psutil.Process(pid).children(recursive=True))
            except self._psutil.Error:
                pass
        return n

    def start(self) -> None:
        if self._psutil is not None:
            self._baseline = self._descendants()
            self._t0 = (time.monotonic(), self._busy(), self._ours())

    def stop(self) -> float | None:
        """Percent of total machine capacity (all CPUs) used by others since ``start``."""
        if self._psutil is None or self._t0 is None:
            return None
        # Backends of the run exit after pgbench does; until the postmaster has reaped them their
        # CPU time shows neither as a live child nor in its children times.
        deadline = time.monotonic() + 3
        while self._descendants() > self._baseline and time.monotonic() < deadline:
            time.sleep(0.02)
        wall, busy, ours = time.monotonic() - self._t0[0], self._busy() - self._t0[1], self._ours() - self._t0[2]
        return max(0.0, 100.0 * (busy - ours) / (wall * (os.cpu_count() or 1)))


# --------------------------------------------------------------------------- pgbench runs


@dataclass
class Target:
    name: str
    port: int
    user: str
    password: str
    pid: int | None = None  # the proxy process, whose CPU time per transaction is reported

    def cpu_seconds(self) -> tuple[float, float] | None:
        """(user, system) CPU seconds the proxy process has used so far."""
        if self.pid is None:
            return None
        try:
            import psutil

            t = psutil.Process(self.pid).cpu_times()
            return t.user, t.system
        except (ImportError, OSError, Exception):  # psutil.Error: the process is gone
            return None


@dataclass
class Run:
    round: int
    mode: str
    target: str
    tps: float
    latency_ms: float
    other_cpu_pct: float | None = None
    proxy_user_us: float | None = None  # proxy CPU per transaction, microseconds (user, system)
    proxy_sys_us: float | None = None


_TPS = re.compile(r"^tps = ([\d.]+)", re.M)
_LAT = re.compile(r"^latency average = ([\d.]+) ms", re.M)


def pgbench(target: Target, mode: str, seconds: int, clients: int, jobs: int) -> tuple[float, float]:
    from proxy.embedded import embedded_binary

    args = [str(embedded_binary("pgbench")), "-h", "127.0.0.1", "-p", str(target.port), "-U", target.user,
            "-S", "-n", "-c", str(clients), "-j", str(jobs), "-T", str(seconds), "-M", mode, DB]
    proc = subprocess.run(args, env=_pg_env(target.password), capture_output=True, text=True, timeout=seconds + 120)
    tps, lat = _TPS.search(proc.stdout), _LAT.search(proc.stdout)
    if proc.returncode != 0 or not tps or not lat:
        raise RuntimeError(f"pgbench against {target.name} ({mode}) failed (exit {proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return float(tps.group(1)), float(lat.group(1))


def _rotate(seq, k: int) -> list:
    k %= len(seq)
    return list(seq[k:]) + list(seq[:k])


def run_matrix(targets: list[Target], modes: list[str], args, load: OtherLoad) -> list[Run]:
    runs: list[Run] = []
    if args.warmup:
        for t in targets:
            say(f"warm-up {args.warmup}s on {t.name}")
            pgbench(t, "prepared", args.warmup, args.clients, args.jobs)
    total = args.rounds * len(modes) * len(targets)
    n = 0
    for r in range(args.rounds):
        for mode in _rotate(modes, r):
            for t in _rotate(targets, r):
                n += 1
                load.start()
                cpu0 = t.cpu_seconds()
                tps, lat = pgbench(t, mode, args.seconds, args.clients, args.jobs)
                cpu1 = t.cpu_seconds()
                other = load.stop()
                run = Run(r + 1, mode, t.name, tps, lat, other)
                note = ""
                if cpu0 and cpu1 and tps > 0:
                    txns = tps * args.seconds
                    run.proxy_user_us = 1e6 * (cpu1[0] - cpu0[0]) / txns
                    run.proxy_sys_us = 1e6 * (cpu1[1] - cpu0[1]) / txns
                    note = f", proxy CPU {run.proxy_user_us:.1f}+{run.proxy_sys_us:.1f} us/txn"
                runs.append(run)
                if other is not None:
                    note += f", others used {other:4.1f}% of the CPUs"
                say(f"[{n}/{total}] round {r + 1} {mode:8} {t.name:15} {tps:10.0f} tps {lat:7.3f} ms{note}")
    return runs


# --------------------------------------------------------------------------- report


@dataclass
class Row:
    mode: str
    target: str
    tps: float
    latency_ms: float
    tps_min: float
    tps_max: float
    vs_direct: float | None = None
    vs_pgbouncer: float | None = None
    other_cpu_pct: float | None = None  # median share of the CPUs other processes used during these runs
    proxy_user_us: float | None = None  # median proxy CPU per transaction (user, system), microseconds
    proxy_sys_us: float | None = None
    runs: list[float] = field(default_factory=list)


def summarize(runs: list[Run], modes: list[str], targets: list[str]) -> list[Row]:
    rows: list[Row] = []
    for mode in modes:
        med: dict[str, Row] = {}
        for t in targets:
            sel = [r for r in runs if r.mode == mode and r.target == t]
            if not sel:
                continue
            tps = [r.tps for r in sel]
            def med_of(attr):
                vals = [getattr(r, attr) for r in sel if getattr(r, attr) is not None]
                return statistics.median(vals) if vals else None

            med[t] = Row(mode, t, statistics.median(tps), statistics.median(r.latency_ms for r in sel), min(tps),
                         max(tps), other_cpu_pct=med_of("other_cpu_pct"), proxy_user_us=med_of("proxy_user_us"),
                         proxy_sys_us=med_of("proxy_sys_us"), runs=tps)
        for t, row in med.items():
            if "direct" in med:
                row.vs_direct = row.tps / med["direct"].tps
            if "pgbouncer" in med:
                row.vs_pgbouncer = row.tps / med["pgbouncer"].tps
            rows.append(row)
    return rows


def render(rows: list[Row]) -> str:
    ratio = lambda x: f"{x:.2f}" if x is not None else "-"  # noqa: E731
    head = (f"{'mode':<9} {'target':<15} {'tps (median)':>12} {'tps min-max':>15} {'latency ms':>10} {'/direct':>8} "
            f"{'/pgbouncer':>10} {'proxy cpu us/txn':>16} {'others cpu%':>11}")
    lines = [head, "-" * len(head)]
    last = None
    for r in rows:
        if last is not None and r.mode != last:
            lines.append("")
        last = r.mode
        lines.append(f"{r.mode:<9} {r.target:<15} {r.tps:>12.0f} {f'{r.tps_min:.0f}-{r.tps_max:.0f}':>15} "
                     f"{r.latency_ms:>10.3f} {ratio(r.vs_direct):>8} {ratio(r.vs_pgbouncer):>10} "
                     f"{'-' if r.proxy_user_us is None else f'{r.proxy_user_us:.1f}+{r.proxy_sys_us:.1f}':>16} "
                     f"{'-' if r.other_cpu_pct is None else f'{r.other_cpu_pct:.1f}':>11}")
    return "\n".join(lines)


def machine() -> dict:
    cpu = ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpus": os.cpu_count(), "cpu_model": cpu or platform.processor(), "kernel": platform.release(),
            "python": platform.python_version()}


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.pgbench", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=10, help="length of each pgbench run (default 10)")
    p.add_argument("--rounds", type=int, default=3, help="rounds over all (mode, target) pairs (default 3)")
    p.add_argument("--clients", type=int, default=8, help="pgbench -c (default 8)")
    p.add_argument("--jobs", type=int, default=2, help="pgbench -j (default 2)")
    p.add_argument("--scale", type=int, default=10, help="pgbench -i -s (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="seconds of prepared-mode warm-up per target (0: none)")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of simple,extended,prepared")
    p.add_argument("--targets", default=",".join(TARGETS),
                   help="comma-separated subset of direct,pgbouncer,pgveil; add relay for a bare uvloop byte relay "
                        "(no parsing), the ceiling of a Python proxy on this machine")
    p.add_argument("--data-dir", type=Path, help="keep the embedded server's data here and reuse it next time "
                                                 "(default: a temporary dir, removed at the end)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")
    args = p.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if bad := set(args.modes) - set(MODES):
        p.error(f"unknown mode(s): {', '.join(sorted(bad))}")
    if bad := set(args.targets) - set(TARGETS) - set(EXTRA_TARGETS):
        p.error(f"unknown target(s): {', '.join(sorted(bad))}")
    if args.seconds < 1 or args.rounds < 1 or args.clients < 1 or args.jobs < 1:
        p.error("--seconds, --rounds, --clients and --jobs must be positive")
    return args


def _raise_interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--relay-server"]:  # internal: the relay target's own process
        _relay_server(int(argv[1]), argv[2], int(argv[3]))
        return 0
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    started = _dt.datetime.now().astimezone()
    with ExitStack() as stack:
        try:
            base = Path(tempfile.mkdtemp(prefix="pgveil-bench-"))
            stack.callback(shutil.rmtree, base, ignore_errors=True)
            data_dir = args.data_dir.expanduser().absolute() if args.data_dir else base / "pg"
            pg = start_postgres(data_dir, args.scale, stack)
            say(pg.version)
            load = OtherLoad()
            postmaster = _postmaster_pid(data_dir)
            if postmaster:
                load.roots.append(postmaster)

            targets: list[Target] = []
            versions = {"postgres": pg.version}
            explained = None
            if "direct" in args.targets:
                targets.append(Target("direct", pg.port, pg.role, pg.role_password))
            if "pgbouncer" in args.targets:
                bouncer = start_pgbouncer(pg, base / "pgbouncer", stack)
                if bouncer is not None:
                    targets.append(Target("pgbouncer", bouncer[0], pg.role, pg.role_password, bouncer[2]))
                    versions["pgbouncer"] = bouncer[1]
                    load.roots.append(bouncer[2])
            if "pgveil" in args.targets:
                port, pid, password = start_pgveil(pg, base / "pgveil", stack)
                load.roots.append(pid)
                targets.append(Target("pgveil", port, PGVEIL_USER, password, pid))
                from proxy import __version__

                versions["pgveil"] = __version__
            if "pgveil-governed" in args.targets:
                port, pid, password = start_pgveil(pg, base / "pgveil-governed", stack, governed=True)
                load.roots.append(pid)
                targets.append(Target("pgveil-governed", port, PGVEIL_USER, password, pid))
                try:
                    explained = explain_governed(pg, port, password)
                except Exception as exc:  # the report says so; the run goes on
                    explained = f"could not explain the governed statement: {type(exc).__name__}: {exc}"
                say("governed " + explained)
            if "relay" in args.targets:
                port, pid = start_relay(pg, stack)
                targets.append(Target("relay", port, pg.role, pg.role_password, pid))
                load.roots.append(pid)
            if not targets:
                print("nothing to benchmark", file=sys.stderr)
                return 1

            say(f"{args.rounds} round(s) x {len(args.modes)} mode(s) x {len(targets)} target(s) x {args.seconds}s, "
                f"pgbench -S -c {args.clients} -j {args.jobs}")
            runs = run_matrix(targets, args.modes, args, load)
        except KeyboardInterrupt:
            say("interrupted: cleaning up")
            return 130

    rows = summarize(runs, args.modes, [t.name for t in targets])
    m = machine()
    print()
    print(f"pgbench -S -n -c {args.clients} -j {args.jobs} -T {args.seconds}, scale {args.scale}, "
          f"median of {args.rounds} round(s); {started:%Y-%m-%d %H:%M %Z}; {m['cpus']} CPUs ({m['cpu_model']})")
    print("; ".join(f"{k} {v}" for k, v in versions.items()))
    print()
    print(render(rows))
    if explained:
        print("\npgveil-governed: " + explained)
    busy = [r for r in runs if r.other_cpu_pct is not None and r.other_cpu_pct > 10]
    if busy:
        print(f"\nnote: in {len(busy)} of {len(runs)} runs other processes used more than 10% of the CPUs "
              f"(max {max(r.other_cpu_pct for r in busy):.0f}%): the machine was shared, compare with care")
    if args.json:
        report = {
            "date": started.isoformat(timespec="seconds"),
            "command": "pgbench -S -n",
            "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "json"},
            "machine": m,
            "versions": versions,
            "results": [asdict(r) for r in rows],
            "runs": [asdict(r) for r in runs],
            "governed_explain": explained,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        say(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
