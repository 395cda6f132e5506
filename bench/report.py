"""Measuring around pgbench and reporting: foreign CPU load, medians, ratios, the table.

What it must not touch: the processes under test (``bench.servers``).
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass, field


# --------------------------------------------------------------------------- other load


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
    w = max([15] + [len(r.target) for r in rows])
    head = (f"{'mode':<9} {'target':<{w}} {'tps (median)':>12} {'tps min-max':>15} {'latency ms':>10} {'/direct':>8} "
            f"{'/pgbouncer':>10} {'proxy cpu us/txn':>16} {'others cpu%':>11}")
    lines = [head, "-" * len(head)]
    last = None
    for r in rows:
        if last is not None and r.mode != last:
            lines.append("")
        last = r.mode
        lines.append(f"{r.mode:<9} {r.target:<{w}} {r.tps:>12.0f} {f'{r.tps_min:.0f}-{r.tps_max:.0f}':>15} "
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


