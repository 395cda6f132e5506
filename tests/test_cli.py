"""The pgveil command line: --version, passwd, schema, check."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import yaml

from proxy import __version__

from .pgfixture import TEST_DB
from .proxyproc import ProxyProcess, env_for, write_config

EXAMPLE = Path(__file__).resolve().parents[2] / "shared" / "docs" / "pgveil.example.yaml"


def pgveil(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxy", *args], input=stdin, capture_output=True, text=True, timeout=60)


def test_version():
    out = pgveil("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"pgveil {__version__}"


def test_passwd_verifier_logs_in_through_the_proxy(tmp_path, pg):
    out = pgveil("passwd", stdin="correct horse battery\n")
    verifier = out.stdout.strip()
    assert out.returncode == 0 and verifier.startswith("SCRAM-SHA-256$4096:")
    assert "correct horse" not in verifier
    config_path = write_config(tmp_path / "pgveil.yaml", pg)
    config = yaml.safe_load(config_path.read_text())
    config["users"]["carol"] = {"password": verifier}
    config_path.write_text(yaml.safe_dump(config))
    proc = ProxyProcess(config_path, env_for(pg))
    try:
        dsn = f"host=127.0.0.1 port={proc.port} dbname={TEST_DB} user=carol"
        with psycopg.connect(dsn, password="correct horse battery") as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (TEST_DB,)
        try:
            psycopg.connect(dsn, password="wrong horse")
            raise AssertionError("wrong password accepted")
        except psycopg.OperationalError as exc:
            assert 'password authentication failed for user "carol"' in str(exc)
    finally:
        proc.stop()


def test_schema_is_json_schema_of_the_whole_config():
    out = pgveil("schema")
    schema = json.loads(out.stdout)
    assert {"listen", "backend", "users", "policies"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False


def test_check_accepts_the_example_and_reports_bad_lines(tmp_path):
    if EXAMPLE.exists():
        ok = pgveil("check", "--config", str(EXAMPLE), "--offline")
        assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("backend: {dsn: embedded}\nusers:\n  ann:\n    password_env: X\n    groupz: [a]\n")
    out = pgveil("check", "--config", str(bad))
    assert out.returncode == 2
    assert f"{bad}:5: users.ann.groupz" in out.stderr
