"""The audit trail: records, the background writer, rotation to Parquet, the summary and CLI."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import logging
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from proxy.audit import AuditRecord, AuditWriter, hash_sql
from proxy.audit.arrow import convert_to_parquet, read_records
from proxy.audit.summary import audit_files, format_summary, parse_since, summarize
from proxy.cli import main as cli_main

SECRET_SQL = "SELECT name, ssn FROM public.patients WHERE ssn = '123-45-6789'"


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rec(i: int = 0, *, user: str = "alice", tables=("public.patients",), decision: str = "allowed",
        sqlstate: str | None = None, duration_ms: float = 1.5, ts: str | None = None,
        sql: str = SECRET_SQL) -> AuditRecord:
    return AuditRecord(
        ts=ts or _iso(datetime.now(timezone.utc)), user=user, client_addr="10.0.0.7:51515", database="clinic",
        purpose="Research.Marketing", project=None, session_id=f"s{i % 7}", statement_kind="SELECT",
        tables=list(tables), columns=[f"{t}.name" for t in tables], policies=["mask-ssn", "rows-by-office"],
        decision=decision, sqlstate=sqlstate, rows=None if decision == "denied" else i,
        duration_ms=duration_ms, sql_hash=hash_sql(f"{sql} -- {i}"), unrestricted=False)


def all_records(directory: Path) -> list[AuditRecord]:
    return [r for path in audit_files(directory) for r in read_records(path)]


def files_in_order(directory: Path, suffix: str) -> list[Path]:
    return sorted(directory.glob(f"audit-*{suffix}"))


def wait_for(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# --- records ---------------------------------------------------------------------------

def test_record_round_trips_through_json_and_is_frozen():
    r = rec(3, decision="denied", sqlstate="42501")
    line = r.to_json()
    assert "\n" not in line
    assert AuditRecord.from_json(line) == r
    assert isinstance(r.tables, tuple) and json.loads(line)["tables"] == ["public.patients"]
    assert list(json.loads(line)) == [
        "ts", "user", "client_addr", "database", "purpose", "project", "session_id", "statement_kind", "tables",
        "columns", "policies", "decision", "sqlstate", "rows", "duration_ms", "sql_hash", "unrestricted"]
    with pytest.raises(AttributeError):
        r.user = "mallory"
    with pytest.raises(ValueError):
        rec(decision="maybe")


def test_for_statement_hashes_the_sql_and_keeps_it_nowhere():
    r = AuditRecord.for_statement(SECRET_SQL, started=10.0, finished=10.25, user="alice", client_addr=None,
                                  database="clinic", purpose=None, project=None, session_id="s1",
                                  statement_kind="SELECT", decision="rewritten", sqlstate=None, rows=2)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r.ts)
    assert r.duration_ms == 250.0
    assert r.sql_hash == hashlib.sha256(SECRET_SQL.encode()).hexdigest()
    line = r.to_json()
    for fragment in (SECRET_SQL, "123-45-6789", "patients WHERE", "ssn ="):
        assert fragment not in line and fragment not in r.sql_hash
    assert r.sql_hash != SECRET_SQL
    keyed = hash_sql(SECRET_SQL, key=b"k" * 32)
    assert re.fullmatch(r"[0-9a-f]{64}", keyed) and keyed != r.sql_hash


# --- writer ----------------------------------------------------------------------------

def test_write_is_cheap_on_the_callers_thread(tmp_path):
    records = [rec(i) for i in range(100_000)]
    w = AuditWriter(tmp_path, max_pending=1_000_000)
    t0 = time.perf_counter()
    for r in records:
        w.write(r)
    elapsed = time.perf_counter() - t0
    w.close()
    assert elapsed < 1.0, f"100k write() calls took {elapsed:.2f}s"
    assert w.dropped == 0 and w.written == 100_000


def test_close_after_a_burst_loses_nothing_and_keeps_order(tmp_path):
    records = [rec(i, user=f"u{i % 5}") for i in range(30_000)]
    w = AuditWriter(tmp_path)
    for r in records:
        w.write(r)
    w.close()
    assert (w.dropped, w.pending) == (0, 0)
    assert all_records(tmp_path) == records
    assert not files_in_order(tmp_path, ".jsonl") and len(files_in_order(tmp_path, ".parquet")) == 1
    w.write(rec(1))   # after close: counted, not raised
    assert w.dropped == 1


def test_records_flush_without_close_within_the_interval(tmp_path):
    w = AuditWriter(tmp_path, convert_to_parquet=False)
    try:
        w.write(rec(1))
        wait_for(lambda: w.written == 1, timeout=2.0)
        [path] = files_in_order(tmp_path, ".jsonl")
        assert re.fullmatch(rf"audit-\d{{8}}T\d{{6}}\.\d{{6}}Z-{os.getpid()}\.jsonl", path.name)
        assert read_records(path) == [rec(1, ts=read_records(path)[0].ts)]
    finally:
        w.close()


def test_rotation_by_size_converts_every_file_to_equal_parquet(tmp_path):
    records = [rec(i) for i in range(300)]
    line_bytes = [len(r.to_json()) + 1 for r in records]
    w = AuditWriter(tmp_path, max_bytes=8192)
    for r in records:
        w.write(r)
    w.close()
    parquet = files_in_order(tmp_path, ".parquet")
    assert not files_in_order(tmp_path, ".jsonl")
    assert len(parquet) >= -(-sum(line_bytes) // 8192) and len(parquet) == len(w.files)
    per_file = [read_records(p) for p in parquet]
    assert [r for chunk in per_file for r in chunk] == records
    # no file held more than max_bytes of lines
    for chunk in per_file:
        assert sum(len(r.to_json()) + 1 for r in chunk) <= 8192


def test_rotation_by_age(tmp_path):
    first, second = [rec(i) for i in range(5)], [rec(i) for i in range(5, 9)]
    w = AuditWriter(tmp_path, max_age_s=0.3, flush_interval_s=0.05)
    for r in first:
        w.write(r)
    wait_for(lambda: len(w.files) == 1)   # rotated and converted while still running
    assert files_in_order(tmp_path, ".parquet") == w.files
    for r in second:
        w.write(r)
    w.close()
    parquet = files_in_order(tmp_path, ".parquet")
    assert len(parquet) == 2 and not files_in_order(tmp_path, ".jsonl")
    assert read_records(parquet[0]) == first and read_records(parquet[1]) == second


def test_unwritable_directory_never_raises_bounds_memory_and_recovers(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    directory = tmp_path / "audit"
    w = AuditWriter(directory, max_pending=1000, flush_interval_s=0.05)
    shutil.rmtree(directory)
    directory.write_text("not a directory")   # works even as root, unlike chmod
    records = [rec(i) for i in range(1500)]
    for r in records:
        w.write(r)                            # must not raise
    wait_for(lambda: w.dropped >= 500 and any("cannot write" in m for m in caplog.messages))
    assert w.dropped >= 500 and w.pending <= 1000 and w.written == 0
    directory.unlink()
    directory.mkdir()
    wait_for(lambda: w.pending == 0)
    w.close()
    back = all_records(directory)
    assert len(back) + w.dropped == 1500 and len(back) == w.written > 0
    assert back == [r for r in records if r in set(back)]   # no duplicates, original order


def test_orphaned_jsonl_of_a_dead_process_is_converted_at_start(tmp_path):
    dead = 4_000_000
    while True:
        try:
            os.kill(dead, 0)
            dead += 1
        except ProcessLookupError:
            break
        except OSError:
            dead += 1
    orphan = tmp_path / f"audit-20240101T000000.000000Z-{dead}.jsonl"
    records = [rec(i) for i in range(3)]
    orphan.write_text("".join(r.to_json() + "\n" for r in records) + '{"ts": "2024-01-0')   # crashed mid-line
    w = AuditWriter(tmp_path)
    w.close()
    assert not orphan.exists()
    assert read_records(orphan.with_suffix(".parquet")) == records


def test_convert_keeps_jsonl_when_parquet_cannot_be_written(tmp_path, monkeypatch):
    path = tmp_path / "audit-20240101T000000.000000Z-1.jsonl"
    path.write_text(rec(1).to_json() + "\n")
    import pyarrow.parquet as pq
    monkeypatch.setattr(pq, "write_table", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        convert_to_parquet(path)
    assert path.exists() and not list(tmp_path.glob("*.parquet*"))


# --- summary ---------------------------------------------------------------------------

def _mixed_directory(directory: Path) -> datetime:
    """jsonl from one writer, parquet from another, an old file, a half-converted pair."""
    now = datetime.now(timezone.utc)
    recent = _iso(now - timedelta(minutes=10))
    a = AuditWriter(directory, convert_to_parquet=False)
    for i in range(6):
        a.write(rec(i, user="alice", tables=("public.patients", "public.visits"), ts=recent))
    for i in range(2):
        a.write(rec(i, user="mallory", decision="denied", sqlstate="42501", ts=recent))
    a.close()
    b = AuditWriter(directory)
    for i in range(3):
        b.write(rec(i, user="bob", tables=("public.visits",), decision="rewritten", ts=recent))
    b.write(rec(9, user="mallory", decision="denied", sqlstate="0A000", ts=recent))
    b.write(rec(8, user="bob", decision="error", sqlstate="57014", ts=recent, duration_ms=9000.0,
                sql="SELECT pg_sleep(9)"))
    b.close()
    assert files_in_order(directory, ".jsonl") and files_in_order(directory, ".parquet")
    # Too old by timestamp, in a fresh file: read, then filtered out.
    old = directory / "audit-20200101T000000.000000Z-1.jsonl"
    old.write_text(rec(1, user="old", ts=_iso(now - timedelta(hours=3))).to_json() + "\n")
    # Too old by mtime: never opened (its content would be counted otherwise).
    stale = directory / "audit-20200101T000001.000000Z-1.jsonl"
    stale.write_text(rec(1, user="stale", ts=recent).to_json() + "\n")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    # A conversion interrupted before the .jsonl was deleted: counted once.
    pair = directory / "audit-20200101T000002.000000Z-1.jsonl"
    pair.write_text(rec(1, user="carol", ts=recent).to_json() + "\n")
    shutil.copy(convert_to_parquet(pair), directory / "x.parquet")
    (directory / "x.parquet").rename(pair.with_suffix(".parquet"))
    pair.write_text(rec(1, user="carol", ts=recent).to_json() + "\n")
    return now


def test_summary_over_mixed_jsonl_and_parquet_is_exact(tmp_path):
    now = _mixed_directory(tmp_path)
    s = summarize(tmp_path, timedelta(hours=1), now=now)
    assert s.total == 14 and not s.unreadable
    assert s.by_decision == {"allowed": 7, "denied": 3, "rewritten": 3, "error": 1}
    assert s.top_users == [("alice", 6), ("bob", 4), ("mallory", 3), ("carol", 1)]
    assert s.top_tables == [("public.patients", 11), ("public.visits", 9)]
    assert s.refusals == [("mallory", "42501", 2), ("mallory", "0A000", 1)]
    assert s.slowest[0][:3] == (hash_sql("SELECT pg_sleep(9) -- 8"), 9000.0, "bob")
    wide = summarize(tmp_path, timedelta(hours=4), now=now)
    assert wide.total == 16 and ("old", 1) in wide.top_users and ("stale", 1) in wide.top_users
    text = format_summary(s)
    assert "statements: 14" in text and "denied 3" in text
    assert re.search(r"^\s+6\s+alice$", text, re.M) and re.search(r"^\s+11\s+public\.patients$", text, re.M)
    assert re.search(r"^\s+2\s+mallory\s+42501$", text, re.M)


def test_summary_of_an_empty_directory(tmp_path):
    text = format_summary(summarize(tmp_path, timedelta(hours=1)))
    assert "statements: 0" in text and "refusals: none" in text


@pytest.mark.parametrize("text,seconds", [("30m", 1800), ("1h", 3600), ("2d", 172800), ("1w", 604800),
                                          ("45s", 45), (" 1.5H ", 5400)])
def test_parse_since(text, seconds):
    assert parse_since(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "1", "h", "-1h", "0m", "1y", "1h30m"])
def test_parse_since_rejects(text):
    with pytest.raises(ValueError):
        parse_since(text)


# --- CLI -------------------------------------------------------------------------------

def test_cli_audit_dir_prints_top_users_and_tables(tmp_path):
    _mixed_directory(tmp_path)
    out = subprocess.run([sys.executable, "-m", "proxy", "audit", "--dir", str(tmp_path), "--since", "1h"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert re.search(r"^\s+6\s+alice$", out.stdout, re.M)
    assert re.search(r"^\s+11\s+public\.patients$", out.stdout, re.M)
    assert re.search(r"^\s+1\s+mallory\s+0A000$", out.stdout, re.M)
    assert SECRET_SQL not in out.stdout


def test_cli_audit_reads_the_directory_from_the_config(tmp_path, capsys):
    w = AuditWriter(tmp_path / "trail")
    w.write(rec(1, user="dora", tables=("public.claims",)))
    w.close()
    config = tmp_path / "pgveil.yaml"
    config.write_text("backend:\n  dsn: postgresql://svc@127.0.0.1:5432/clinic\naudit:\n  path: trail\n")
    assert cli_main(["audit", "--config", str(config), "--since", "30m"]) == 0
    stdout = capsys.readouterr().out
    assert re.search(r"^\s+1\s+dora$", stdout, re.M) and re.search(r"^\s+1\s+public\.claims$", stdout, re.M)
    config.write_text("backend:\n  dsn: postgresql://svc@127.0.0.1:5432/clinic\n")
    assert cli_main(["audit", "--config", str(config)]) == 2
    assert cli_main(["audit", "--dir", str(tmp_path), "--since", "soon"]) == 2


# -- per-statement fields: the fast forms agree with the reference ones -----------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

from proxy.audit.record import utc_now_iso  # noqa: E402
from proxy.session import auditing  # noqa: E402

_WORDS = ["SELECT", "select", "with", "E", "U", "x", "_a$1", "selectä", "é", "(", "'q'", "\"id\"", "&", "/* c */",
          "-- c\n", " ", "\t", "\n", "\v", ";", "1", "$1", "'", "\\"]


def _scan_kind(sql: str) -> str:
    from pglast import parser as pg_parser
    try:
        for token in pg_parser.scan(sql):
            if token.name not in ("SQL_COMMENT", "C_COMMENT"):
                return sql[token.start:token.end + 1].upper()
    except Exception:
        pass
    return "UNKNOWN"


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_WORDS), max_size=5).map("".join))
def test_statement_kind_reads_the_first_token_as_postgres_does(sql):
    from pglast import parser as pg_parser
    try:
        pg_parser.scan(sql)
    except Exception:  # the lexer gives up later in the text: UNKNOWN, or the first word if there is a plain one
        kind = auditing.statement_kind(sql)
        assert kind == "UNKNOWN" or sql.lstrip(" \t\n\r\f").upper().startswith(kind) and kind.replace("_", "A").replace("$", "A").isalnum()
        return
    assert auditing.statement_kind(sql) == _scan_kind(sql)


def test_timestamps_are_utc_milliseconds_and_current():
    before = datetime.now(timezone.utc)
    ts = utc_now_iso()
    after = datetime.now(timezone.utc)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ts)
    parsed = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert before - timedelta(milliseconds=1) <= parsed <= after
