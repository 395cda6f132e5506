"""``pgveil explain`` (the policy simulator) and ``pgveil check`` against the backend catalog.

The CLI runs as a subprocess on the example config's policies over the clinic
database; the runner's catalog check is seen in ``pgveil serve``'s log.
"""
from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys

import asyncpg
import pytest
import yaml

from proxy.check import Finding, format_finding
from proxy.explain import format_table, format_text, redact
from proxy.policy_state import MasterKeys
from rewrite.engine.keys import padded_keys

from .clinic_fixture import EXAMPLE, clinic_config, clinic_env, create_clinic
from .proxyproc import ProxyProcess

pytestmark = pytest.mark.skipif(not EXAMPLE.exists(), reason="../shared/docs/pgveil.example.yaml is absent")


@pytest.fixture(scope="module")
def clinic(pg, tmp_path_factory):
    asyncio.run(create_clinic(pg))
    d = tmp_path_factory.mktemp("explain")
    key_file = d / "master.key"
    key_file.write_text(secrets.token_hex(32) + "\n")
    return clinic_config(d / "pgveil.yaml", pg, key_file), key_file


def pgveil(pg, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxy", *args], capture_output=True, text=True, timeout=120,
                          env=clinic_env(pg))


def explain(pg, config, *args: str) -> subprocess.CompletedProcess:
    return pgveil(pg, "explain", "--config", str(config), *args)


def edited(config, tmp_path, name, edit) -> str:
    data = yaml.safe_load(config.read_text())
    edit(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def line_of(path, needle: str) -> int:
    return next(i for i, line in enumerate(open(path).read().splitlines(), 1) if needle in line)


# -- explain -----------------------------------------------------------------------------


def test_explain_alice_without_purpose_names_the_requirement(pg, clinic):
    config, _ = clinic
    out = explain(pg, config, "--user", "alice", "SELECT * FROM patients")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith("subject: alice\n")
    assert "groups:     analysts" in text and "office_location=Missouri" in text
    assert "public.patients: DENIED" in text
    assert "requires Research (policy phi-for-research-only): NOT satisfied" in text
    assert "verdict: REFUSED 42501: permission denied for table public.patients: acting under purpose Research" in text


def test_explain_alice_under_her_purpose_shows_masks_and_no_key(pg, clinic):
    config, key_file = clinic
    out = explain(pg, config, "--user", "alice", "--purpose", "Research.Marketing",
                  "SELECT name, ssn, email, zip FROM patients WHERE patient_id < 10")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "purposes:   Research.Marketing" in text
    assert "public.patients: allowed (allowed by policy analysts-read-clinic)" in text
    assert "requires Research (policy phi-for-research-only): satisfied" in text
    lines = text.splitlines()
    assert any(l.split()[:2] == ["ssn", "null"] and "[policy ssn-by-role]" in l for l in lines), text
    assert any(l.split()[:2] == ["email", "hash"] and "[policy hash-pii]" in l for l in lines), text
    assert "k-anonymity: k=5 over (zip, birth_year)" in text and "[policy k-anon-quasi-ids]" in text
    assert "verdict: rewritten (policies: " in text
    sql = text.split("verdict: rewritten", 1)[1]
    assert "pg_temp.pgveil_keys" in sql and "FROM public.patients" in sql
    # No key material in any form: the master key, the per-table keys, their HMAC pads.

    async def oids():
        conn = await asyncpg.connect(pg.dsn())
        try:
            return [r[0] for r in await conn.fetch("SELECT oid::int8 FROM pg_class WHERE relname IN ('patients', 'claims', 'visits')")]
        finally:
            await conn.close()

    master = key_file.read_bytes().strip()
    keys = MasterKeys(master)
    forbidden = {master.decode().lower()}
    for oid in asyncio.run(oids()):
        for purpose in ("mask", "sample"):
            k = keys.key_for(oid, purpose)
            forbidden |= {k.hex(), *(p.hex() for p in padded_keys(k))}
    for secret in forbidden:
        assert secret not in text.lower()
        assert secret[:32] not in text.lower()


def test_explain_row_filters_as_sql(pg, clinic):
    config, _ = clinic
    out = explain(pg, config, "--user", "alice", "SELECT count(*) FROM claims")
    assert out.returncode == 0, out.stderr
    assert "match [policy claims-in-my-state]: claims.state = ANY(CAST(ARRAY['Missouri'] AS text[]))" in out.stdout
    assert "time_window [policy recent-claims]: claims.filed_at >= pg_catalog.now()" in out.stdout
    assert "where [policy big-claims-need-compliance]: claims.amount < 10000 OR CAST('alice' AS text) = 'reviewer'" in out.stdout
    assert "account_no  null where country = 'USA'  [policy mask-us-accounts]" in out.stdout


def test_explain_contractor_denied(pg, clinic):
    config, _ = clinic
    out = explain(pg, config, "--user", "erin", "SELECT * FROM claims")
    assert out.returncode == 0, out.stderr
    assert "public.claims: DENIED (denied by policy analysts-read-clinic)" in out.stdout
    assert "verdict: REFUSED 42501: permission denied for table public.claims: denied by policy analysts-read-clinic" in out.stdout


def test_explain_errors(pg, clinic):
    config, _ = clinic
    out = explain(pg, config, "--user", "alice", "SELEC * FROM patients")
    assert out.returncode == 2
    assert "syntax error" in out.stderr and "SELEC" in out.stderr and not out.stdout
    out = explain(pg, config, "--user", "mallory", "SELECT 1")
    assert out.returncode == 2 and 'unknown user "mallory"' in out.stderr
    out = explain(pg, config, "--user", "alice", "--purpose", "Fraud", "SELECT 1")
    assert out.returncode == 2 and 'may not act under purpose "Fraud"' in out.stderr


def test_explain_json(pg, clinic):
    config, _ = clinic
    out = explain(pg, config, "--user", "alice", "--purpose", "Research.Marketing", "--json",
                  "SELECT ssn FROM patients; SELECT * FROM visits")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["subject"]["user"] == "alice" and result["subject"]["purposes"] == ["Research.Marketing"]
    first, second = result["statements"]
    assert first["verdict"] == "rewritten" and "pgveil_keys" in first["sql"]
    (patients,) = first["tables"]
    masks = {m["column"]: m for m in patients["masks"]}
    assert masks["ssn"]["type"] == "null" and masks["ssn"]["policy"] == "ssn-by-role"
    assert masks["email"]["type"] == "hash" and masks["email"]["policy"] == "hash-pii"
    assert patients["k_anonymity"] == [{"k": 5, "columns": ["zip", "birth_year"], "policy": "k-anon-quasi-ids"}]
    assert second["verdict"] == "refused" and second["sqlstate"] == "0A000" and second["policy"] == "dp-visits"
    assert second["tables"][0]["dp"]["epsilon"] == 1.0
    assert second["tables"][0]["minimization"]["percent"] == 10
    assert result["refused"] is True  # the proxy refuses the whole query text
    assert result["whole_text"] == {"action": "refuse", "sqlstate": "0A000", "message": second["message"]}


def test_redact_and_format_are_pure():
    sql, n = redact("SELECT '\\x00112233445566778899aabb'::bytea, X'0123456789abcdef01', '0123456789abcdef', 'ab'")
    assert n == 2 and "00112233" not in sql and "0123456789abcdef01" not in sql and "'0123456789abcdef'" in sql
    table = {"table": "public.t", "kind": "table", "allowed": True, "policy": "p", "reason": "allowed by policy p",
             "unrestricted": False, "plain": False, "denied_columns": [{"column": "x", "policy": None}],
             "masks": [{"column": "ssn", "type": "partial", "params": {"show_last": 4}, "policy": "m"}],
             "row_filters": [], "minimization": None, "k_anonymity": [], "purposes": [], "dp": None}
    assert format_table(table) == [
        "public.t: allowed (allowed by policy p)",
        "  column x: denied (no policy grants it); reads as NULL",
        "  masks:",
        "    ssn  partial show_last=4  [policy m]",
    ]
    result = {"subject": {"user": "u", "groups": [], "attributes": {}, "purposes": [], "project": None,
                          "unrestricted": False},
              "statements": [{"statement": "SELECT 1", "tables": [], "verdict": "forwarded unchanged", "sql": "SELECT 1",
                              "redacted_literals": 0}]}
    assert format_text(result).endswith("statement: SELECT 1\n  (no table of the database referenced)\nverdict: forwarded unchanged\n")
    assert format_finding(Finding("error", (), "boom"), None) == "boom"


# -- check -------------------------------------------------------------------------------


def test_check_clinic_passes_with_classification_warnings(pg, clinic):
    config, _ = clinic
    out = pgveil(pg, "check", "--config", str(config))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "warning: " in out.stdout and "error: " not in out.stdout
    patients = next(l for l in out.stdout.splitlines() if "governed table public.patients" in l)
    assert "no classification" in patients and "patient_id, name" in patients
    assert f"matches database {pg.database}" in out.stdout


def test_check_reports_missing_table_and_column_with_policy_and_line(pg, clinic, tmp_path):
    config, _ = clinic

    def edit(data):
        data["policies"][0]["access"]["tables"].append("public.nosuch")
        data["policies"].append({"name": "mask-ghost", "mask": {"column": "public.patients.nosuchcol", "type": "null",
                                                                "for": "everyone"}})

    path = edited(config, tmp_path, "bad.yaml", edit)
    out = pgveil(pg, "check", "--config", path)
    assert out.returncode == 2, out.stdout + out.stderr
    nosuch = line_of(path, "public.nosuch")
    ghost = line_of(path, "public.patients.nosuchcol")
    assert (f"error: {path}:{nosuch}: policies[0] (analysts-read-clinic).access.tables.3: "
            f"table public.nosuch does not exist in database {pg.database}") in out.stdout
    assert (f"error: {path}:{ghost}: policies[15] (mask-ghost).mask.column: column public.patients.nosuchcol "
            "does not exist") in out.stdout
    assert "2 error(s)" in out.stderr


def test_check_mask_type_and_tables_section(pg, clinic, tmp_path):
    config, _ = clinic

    def edit(data):
        data["policies"].append({"name": "regex-on-int", "mask": {"column": "public.patients.birth_year", "type": "regex",
                                                                  "pattern": "1", "replacement": "x", "for": "everyone"}})
        data["tables"]["public.claims"]["event_time"] = "filed"
        data["tags"]["public.gone.col"] = ["GONE"]

    path = edited(config, tmp_path, "types.yaml", edit)
    out = pgveil(pg, "check", "--config", path)
    assert out.returncode == 2
    assert "policies[15] (regex-on-int).mask: mask type regex cannot apply to public.patients.birth_year of type integer" in out.stdout
    assert "tables.public.claims.event_time: column filed does not exist in public.claims" in out.stdout
    assert "tags.public.gone.col: table public.gone does not exist" in out.stdout
    assert "warning: " in out.stdout and "tag GONE: no existing table or column carries it" in out.stdout


def test_check_offline_and_unreachable_backend(pg, clinic, tmp_path):
    config, _ = clinic

    def edit(data):
        data["backend"]["dsn"] = "postgresql://nobody@127.0.0.1:1/nowhere"
        data["policies"][0]["access"]["tables"].append("public.nosuch")

    path = edited(config, tmp_path, "offline.yaml", edit)
    out = pgveil(pg, "check", "--config", path, "--offline")
    assert out.returncode == 0, out.stderr
    assert "database not checked (--offline)" in out.stdout
    out = pgveil(pg, "check", "--config", path)
    assert out.returncode == 3
    assert "cannot read the backend catalog" in out.stderr and "--offline" in out.stderr


def test_serve_logs_the_catalog_check(pg, clinic, tmp_path):
    config, _ = clinic
    path = edited(config, tmp_path, "serve.yaml", lambda d: d["policies"][0]["access"]["tables"].append("public.nosuch"))
    proc = ProxyProcess(path, clinic_env(pg))
    try:
        log = "".join(proc.output)
    finally:
        proc.stop()
    assert "ERROR config vs database: policies[0] (analysts-read-clinic).access.tables.3: table public.nosuch does not exist" in log
    assert "WARNING config vs database:" in log and "no classification" in log
