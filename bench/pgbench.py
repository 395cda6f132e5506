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
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

from .report import OtherLoad, Run, machine, render, summarize
from .servers import (DB, EXTRA_TARGETS, MODES, PGVEIL_USER, TARGETS, _pg_env, _postmaster_pid, _relay_server,
                      explain_governed, say, start_pgbouncer, start_pgveil, start_postgres, start_relay)

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
    p.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                   help="also run pgveil (and pgveil-governed) from another checkout, e.g. a `git worktree` of main, "
                        "as targets pgveil@base and pgveil-governed@base in the same interleaved rounds: before/after "
                        "figures under the same conditions")
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
            if args.baseline is not None:
                checkout = args.baseline.expanduser().absolute()
                if not (checkout / "proxy" / "__main__.py").exists():
                    raise SystemExit(f"--baseline {checkout}: not a pgveil checkout")
                for name in ("pgveil", "pgveil-governed"):
                    if name in args.targets:
                        port, pid, password = start_pgveil(pg, base / f"{name}@base", stack, name == "pgveil-governed",
                                                           repo=checkout)
                        load.roots.append(pid)
                        targets.append(Target(f"{name}@base", port, PGVEIL_USER, password, pid))
            if "pgveil-audited" in args.targets:
                port, pid, password = start_pgveil(pg, base / "pgveil-audited", stack, audited=True)
                load.roots.append(pid)
                targets.append(Target("pgveil-audited", port, PGVEIL_USER, password, pid))
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
