"""``pgveil audit --since 1h``: who ran what, what was refused, what was slow.

Reads every ``.jsonl`` and ``.parquet`` file in an audit directory with Arrow and
aggregates with Arrow compute, so a day of records summarizes in seconds. Files
whose mtime is before the window cannot hold a record inside it (a file's last
record is written before its mtime) and are not opened.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from . import arrow

TOP = 10
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SINCE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", re.IGNORECASE)


def parse_since(text: str) -> timedelta:
    """``30m``, ``1h``, ``2d``, ``1w`` (also ``s``) as a timedelta; ValueError otherwise."""
    m = _SINCE.fullmatch(text or "")
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"--since: expected a positive duration like 30m, 1h, 2d or 1w, not {text!r}")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2).lower()])


@dataclass
class Summary:
    start: datetime
    end: datetime
    files: int = 0
    total: int = 0
    by_decision: dict[str, int] = field(default_factory=dict)
    top_users: list[tuple[str, int]] = field(default_factory=list)
    top_tables: list[tuple[str, int]] = field(default_factory=list)
    refusals: list[tuple[str, str, int]] = field(default_factory=list)   # user, sqlstate, count
    slowest: list[tuple[str, float, str, str]] = field(default_factory=list)   # sql_hash, ms, user, ts
    unreadable: list[str] = field(default_factory=list)


def audit_files(directory: str | Path) -> list[Path]:
    """The audit files in ``directory``; a ``.jsonl`` whose ``.parquet`` already exists
    (a conversion interrupted before the delete) is skipped, so nothing counts twice."""
    directory = Path(directory)
    parquet = sorted(directory.glob("audit-*.parquet"))
    done = {p.stem for p in parquet}
    return parquet + [p for p in sorted(directory.glob("audit-*.jsonl")) if p.stem not in done]


def summarize(directory: str | Path, since: timedelta, *, now: datetime | None = None) -> Summary:
    end = now or datetime.now(timezone.utc)
    start = end - since
    summary = Summary(start=start, end=end)
    tables = []
    for path in audit_files(directory):
        try:
            if datetime.fromtimestamp(path.stat().st_mtime, timezone.utc) < start:
                continue
            tables.append(arrow.read_file(path))
            summary.files += 1
        except (OSError, pa.ArrowException, ValueError) as exc:
            summary.unreadable.append(f"{path.name}: {exc}")
    if not tables:
        return summary
    t = pa.concat_tables(tables)
    t = t.filter(pc.greater_equal(t["ts"], pa.scalar(start, type=arrow.SCHEMA.field("ts").type)))
    summary.total = t.num_rows
    if not t.num_rows:
        return summary
    summary.by_decision = dict(_counts(t["decision"]))
    summary.top_users = _counts(t["user"])[:TOP]
    summary.top_tables = _counts(pc.list_flatten(t["tables"]))[:TOP]
    denied = t.filter(pc.equal(t["decision"], "denied"))
    if denied.num_rows:
        grouped = denied.group_by(["user", "sqlstate"]).aggregate([("decision", "count")]).to_pylist()
        summary.refusals = sorted(((g["user"], g["sqlstate"] or "-", g["decision_count"]) for g in grouped),
                                  key=lambda r: (-r[2], r[0], r[1]))
    slow = t.sort_by([("duration_ms", "descending")]).slice(0, TOP)
    summary.slowest = [(r["sql_hash"], r["duration_ms"], r["user"], _iso(r["ts"]))
                       for r in slow.select(["sql_hash", "duration_ms", "user", "ts"]).to_pylist()]
    return summary


def _counts(column) -> list[tuple[str, int]]:
    """Value counts, most frequent first, ties by name (nulls shown as '-')."""
    pairs = [(v["values"] if v["values"] is not None else "-", v["counts"])
             for v in pc.value_counts(column).to_pylist()]
    return sorted(pairs, key=lambda p: (-p[1], p[0]))


def _iso(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def format_summary(s: Summary) -> str:
    """A plain-text report for a terminal; every section is present even when empty."""
    fmt = "%Y-%m-%d %H:%M:%SZ"
    out = [f"audit {s.start.astimezone(timezone.utc).strftime(fmt)} .. {s.end.astimezone(timezone.utc).strftime(fmt)}"
           f" ({s.files} file{'s' * (s.files != 1)})",
           f"statements: {s.total}"]
    decisions = ("allowed", "rewritten", "denied", "error")
    extra = sorted(k for k in s.by_decision if k not in decisions)
    out.append("  " + "  ".join(f"{d} {s.by_decision.get(d, 0)}" for d in (*decisions, *extra)))
    out.append(f"top users (of {len(s.top_users)} shown):" if s.top_users else "top users: none")
    out += [f"  {n:>8}  {u}" for u, n in s.top_users]
    out.append("top tables:" if s.top_tables else "top tables: none")
    out += [f"  {n:>8}  {t}" for t, n in s.top_tables]
    out.append("refusals by user and sqlstate:" if s.refusals else "refusals: none")
    out += [f"  {n:>8}  {u}  {state}" for u, state, n in s.refusals]
    out.append("slowest statements:" if s.slowest else "slowest statements: none")
    out += [f"  {ms:>10.1f} ms  sql {h[:16]}  {u}  {ts}" for h, ms, u, ts in s.slowest]
    for problem in s.unreadable:
        out.append(f"unreadable: {problem}")
    return "\n".join(out)
