"""Audit records written by the running proxy: one per statement, for every decision kind."""
from __future__ import annotations

import asyncio
import json

import psycopg
import pytest

from .clinic_fixture import CLINIC_PASSWORDS, EXAMPLE, clinic_config, clinic_env, create_clinic
from .pgfixture import TEST_DB
from .proxyproc import ProxyProcess

pytestmark = pytest.mark.skipif(not EXAMPLE.exists(), reason="../shared/docs/pgveil.example.yaml is absent")


def _connect(port, user, purpose=None):
    return psycopg.connect(host="127.0.0.1", port=port, dbname=TEST_DB, user=user, password=CLINIC_PASSWORDS[user],
                           options=f"-c pgveil.purpose={purpose}" if purpose else None, autocommit=True)


def _records(directory):
    import pyarrow.parquet as pq

    out = []
    for f in sorted(directory.iterdir()):
        if f.suffix == ".jsonl":
            out += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        elif f.suffix == ".parquet":
            out += pq.read_table(f).to_pylist()
    return out


def _audited_proxy(pg, tmp_path):
    """The clinic behind a running pgveil that audits to ``tmp_path/audit``: (that directory, the process)."""
    asyncio.run(create_clinic(pg))
    audit_dir = tmp_path / "audit"
    path = clinic_config(tmp_path / "pgveil.yaml", pg, tmp_path / "master.key", drop_policies=("dp-visits",),
                         audit_dir=audit_dir)
    return audit_dir, ProxyProcess(path, clinic_env(pg))


def test_every_statement_is_audited_without_its_text(pg, tmp_path):
    audit_dir, proc = _audited_proxy(pg, tmp_path)
    try:
        with _connect(proc.port, "alice", "Research.Marketing") as conn:
            conn.execute("SELECT ssn FROM patients WHERE ssn <> '111-22-3333'").fetchall()
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT pg_read_file('/etc/shadow')")
            conn.execute("SELECT claim_id FROM claims WHERE claim_id = %s", (1,)).fetchall()
        with _connect(proc.port, "erin") as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT * FROM claims")
        with _connect(proc.port, "root") as conn:
            conn.execute("SELECT count(*) FROM generate_series(1, 7)").fetchall()
            conn.execute("SELECT g FROM generate_series(1, 7) g").fetchall()
    finally:
        assert proc.stop() == 0
    records = _records(audit_dir)
    raw = "\n".join(json.dumps(r, default=str) for r in records)
    for secret in ("111-22-3333", "/etc/shadow", "pg_read_file", "generate_series"):
        assert secret not in raw, f"audit holds statement text: {secret}"
    by_user = {}
    for r in records:
        by_user.setdefault(r["user"], []).append(r)
    alice = by_user["alice"]
    assert [r["decision"] for r in alice] == ["rewritten", "denied", "rewritten"]
    assert alice[0]["tables"] == ["public.patients"] and "ssn-by-role" in alice[0]["policies"]
    assert alice[0]["purpose"] == "Research.Marketing" and alice[0]["statement_kind"] == "SELECT"
    assert alice[1]["sqlstate"] == "42501" and alice[1]["rows"] is None
    assert alice[2]["rows"] == 1 and alice[2]["tables"] == ["public.claims"]
    erin = by_user["erin"]
    assert [(r["decision"], r["sqlstate"]) for r in erin] == [("denied", "42501")]
    root = by_user["root"]
    assert [(r["decision"], r["rows"], r["unrestricted"]) for r in root] == [("allowed", 1, True), ("allowed", 7, True)]
    assert all(len(r["sql_hash"]) == 64 and r["duration_ms"] >= 0 and r["client_addr"].startswith("127.0.0.1:")
               for r in records)


def test_each_execution_of_a_prepared_statement_is_a_record(pg, tmp_path):
    """Drivers that prepare once and execute many times (psycopg prepare=True, pgbench -M prepared) leave one
    record per execution, each with its Parse's decision; the unnamed statement re-parsed each time is not
    counted twice; a closed statement's name is forgotten."""
    audit_dir, proc = _audited_proxy(pg, tmp_path)
    try:
        for user, purpose in (("alice", "Research.Marketing"), ("root", None)):
            with _connect(proc.port, user, purpose) as conn:
                for i in range(1, 5):  # a server-side prepared statement, bound four times
                    conn.execute("SELECT claim_id, amount FROM claims WHERE claim_id = %s", (i,), prepare=True).fetchall()
                for i in range(1, 4):  # the unnamed statement: Parse + Bind every time
                    conn.execute("SELECT claim_id FROM claims WHERE claim_id > %s LIMIT 2", (i,), prepare=False).fetchall()
    finally:
        assert proc.stop() == 0
    records = _records(audit_dir)
    for user, decision in (("alice", "rewritten"), ("root", "allowed")):
        mine = [r for r in records if r["user"] == user]
        by_text = {}
        for r in mine:
            by_text.setdefault(r["sql_hash"], []).append(r)
        assert sorted(len(v) for v in by_text.values()) == [3, 4], [(r["decision"], r["rows"]) for r in mine]
        assert all(r["decision"] == decision and r["tables"] == (["public.claims"] if user == "alice" else [])
                   and r["statement_kind"] == "SELECT" for r in mine)
        prepared = next(v for v in by_text.values() if len(v) == 4)
        assert all(r["rows"] in (0, 1) for r in prepared)
