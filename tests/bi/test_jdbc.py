"""pgjdbc DatabaseMetaData through a governed pgveil (tests/bi/JdbcMeta.java, compiled at test time)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ..clinic_fixture import CLINIC_PASSWORDS
from ..pgfixture import TEST_DB

JAR = Path("/usr/share/java/postgresql.jar")
SOURCE = Path(__file__).with_name("JdbcMeta.java")

pytestmark = [
    pytest.mark.skipif(shutil.which("javac") is None or shutil.which("java") is None, reason="no JDK (javac/java)"),
    pytest.mark.skipif(not JAR.exists(), reason=f"{JAR} is absent (apt-get install libpostgresql-jdbc-java)"),
]


@pytest.fixture(scope="module")
def jdbc(bi_proxy, tmp_path_factory):
    classes = tmp_path_factory.mktemp("jdbc")
    built = subprocess.run(["javac", "-d", str(classes), str(SOURCE)], capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    url = f"jdbc:postgresql://127.0.0.1:{bi_proxy.port}/{TEST_DB}"

    def run(user: str, purpose: str | None = None) -> dict[str, list[tuple[str, ...]]]:
        options = f"-c pgveil.purpose={purpose}" if purpose else ""
        r = subprocess.run(["java", "-cp", f"{JAR}:{classes}", "JdbcMeta", url, user, CLINIC_PASSWORDS[user], options],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        out: dict[str, list[tuple[str, ...]]] = {}
        for line in r.stdout.splitlines():
            kind, *rest = line.split("\t")
            out.setdefault(kind, []).append(tuple(rest))
        assert "DONE" in out, r.stdout
        return out
    return run


def test_root_sees_every_table(jdbc):
    out = jdbc("root")
    assert {t for _, t in out["TABLE"]} >= {"patients", "claims", "visits", "items", "events"}
    assert "ERROR" not in out


def test_alice_metadata_and_prepared_select(jdbc):
    out = jdbc("alice")
    assert "ERROR" not in out, out.get("ERROR")
    assert out["TABLE"] == [("public", "claims")]
    assert [c for _, c, _ in out["COLUMN"]] == ["claim_id", "patient_id", "state", "amount", "account_no", "country",
                                                "filed_at"]
    assert out["PK"] == [("claims", "claim_id", "claims_pkey")]
    assert out["INDEX"] == [("claims", "claims_pkey")]  # getIndexInfo reads pg_class.reltuples: served as NULL
    assert "FK" not in out  # getImportedKeys ran (it reads pg_settings' max_index_keys) and found none
    schemas = {s for (s,) in out["SCHEMA"]}
    # other test modules may add schemas of their own (rw); never a temp schema
    assert {"information_schema", "pg_catalog", "public"} <= schemas
    assert not any(s.startswith(("pg_temp", "pg_toast_temp")) for s in schemas), schemas
    assert out["CATALOG"] == [(TEST_DB,)]
    # the row filters apply, on the first execution and on the named server-side statement
    assert out["ROW"] == [("0", "1", "Missouri"), ("0", "4", "Missouri"), ("1", "1", "Missouri"), ("1", "4", "Missouri")]


def test_purpose_shows_patients(jdbc):
    assert {t for _, t in jdbc("alice", "Research.Marketing")["TABLE"]} == {"claims", "patients"}


def test_erin_lists_nothing_and_is_refused_clearly(jdbc):
    out = jdbc("erin")
    assert "TABLE" not in out and "COLUMN" not in out and "PK" not in out
    assert [e[:2] for e in out["ERROR"]] == [("select", "42501")]
    assert "analysts-read-clinic" in out["ERROR"][0][2]
