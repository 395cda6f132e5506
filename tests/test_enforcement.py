"""Policies enforced through the wire: the example config's policies on a small clinic database.

The proxy runs as ``pgveil serve`` (catalog loaded from the backend, keys set up
per session); clients are psycopg over real sockets. Every check on protected
data asserts the raw value appears nowhere in rows or error text.
"""
from __future__ import annotations

import asyncio
import time

import psycopg
import pytest
import yaml

from .clinic_fixture import CLINIC_PASSWORDS, EXAMPLE, clinic_env, clinic_ready
from .pgfixture import TEST_DB
from .proxyproc import ProxyProcess

pytestmark = pytest.mark.skipif(not EXAMPLE.exists(), reason="../shared/docs/pgveil.example.yaml is absent")

SSNS = ["111-22-3333", "444-55-6666", "777-88-9999"]
EMAILS = ["ann@example.com", "bob@example.com", "cy@example.com"]


@pytest.fixture(scope="module")
def clinic(pg, tmp_path_factory):
    # DP queries are a later issue: without dropping dp-visits, visits is unreadable to governed users
    path = clinic_ready(pg, tmp_path_factory.mktemp("clinic"), drop_policies=("dp-visits",))
    proc = ProxyProcess(path, clinic_env(pg))
    yield proc, path
    proc.stop()


def connect(clinic, user, purpose=None, **kw):
    proc, _ = clinic
    options = f"-c pgveil.purpose={purpose}" if purpose else None
    return psycopg.connect(host="127.0.0.1", port=proc.port, dbname=TEST_DB, user=user,
                           password=CLINIC_PASSWORDS[user], options=options, autocommit=True, **kw)


def no_secret(text: str, secrets=(*SSNS, *EMAILS, "ACC-SECRET")):
    for s in secrets:
        assert s not in text, f"protected value {s!r} leaked"


def test_unrestricted_root_sees_raw_data(clinic):
    with connect(clinic, "root") as conn:
        rows = conn.execute("SELECT ssn, email FROM patients WHERE patient_id <= 3 ORDER BY patient_id").fetchall()
    assert rows == list(zip(SSNS, EMAILS))


def test_purpose_limited_table_needs_a_purpose(clinic):
    with connect(clinic, "alice") as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
            conn.execute("SELECT * FROM patients")
        assert "Research" in str(err.value)
        no_secret(str(err.value))
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the session stays usable


def test_alice_sees_masked_patients_under_her_purpose(clinic):
    with connect(clinic, "alice", purpose="Research.Marketing") as conn:
        rows = conn.execute("SELECT patient_id, ssn, email FROM patients WHERE patient_id <= 3 ORDER BY 1").fetchall()
        text = repr(rows)
        no_secret(text)
        assert [r[1] for r in rows] == [None, None, None]  # ssn-by-role: otherwise null
        hashed = [r[2] for r in rows]
        assert all(h and len(h) == 64 for h in hashed) and len(set(hashed)) == 3  # keyed hash, distinct
        # every clause sees the masked value: filtering on the raw SSN finds nothing
        assert conn.execute("SELECT count(*) FROM patients WHERE ssn = '111-22-3333'").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM patients WHERE email LIKE 'ann%'").fetchone() == (0,)
        whole = conn.execute("SELECT to_jsonb(p)::text FROM patients p WHERE patient_id = 1").fetchone()[0]
        no_secret(whole)
        assert conn.execute("SHOW pgveil.purpose").fetchone() == ("Research.Marketing",)


def test_row_filters_combine(clinic):
    with connect(clinic, "alice") as conn:
        rows = conn.execute("SELECT claim_id, state FROM claims ORDER BY claim_id").fetchall()
    # Missouri only, within 365 days, amount < 10000: claims 1 and 4 (3 is too big, 5 too old, 2 is Ohio)
    assert rows == [(1, "Missouri"), (4, "Missouri")]


def test_filtered_rows_never_reached_by_error_oracles(clinic):
    with connect(clinic, "alice") as conn:
        # claim 3 (25000) is filtered out: a predicate that divides by zero on it must not fire
        assert conn.execute("SELECT count(*) FROM claims WHERE 1 / (amount - 25000) IS NOT NULL").fetchone() == (2,)


def test_conditional_mask_and_regex_and_round(clinic):
    with connect(clinic, "alice") as conn:
        accounts = conn.execute("SELECT claim_id, account_no, country FROM claims ORDER BY 1").fetchall()
        visits = conn.execute("SELECT cost, client_ip FROM visits ORDER BY visit_id LIMIT 50").fetchall()
    assert accounts[0] == (1, None, "USA")  # US accounts nulled
    assert accounts[1] == (4, "ACC-SECRET-4", "Canada")  # the mask's where: only USA rows
    assert visits, "minimization kept no visits"
    assert all(ip.endswith(".XXX") for _, ip in visits)
    assert all(cost % 100 == 0 for cost, _ in visits)


def test_denied_user_gets_42501_naming_the_policy(clinic):
    with connect(clinic, "erin") as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
            conn.execute("SELECT * FROM claims")
        assert "analysts-read-clinic" in str(err.value)
    with connect(clinic, "carol") as conn:  # excepted from the contractors' deny
        assert conn.execute("SELECT count(*) FROM claims").fetchone()[0] >= 0


def test_refusal_inside_transaction_behaves_like_postgres(clinic):
    with connect(clinic, "alice") as conn:
        conn.autocommit = False
        conn.execute("SELECT 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT pg_read_file('/etc/passwd')")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.execute("SELECT 2").fetchone() == (2,)


def test_extended_protocol_and_pipeline_refusals_land_in_order(clinic):
    with connect(clinic, "alice", prepare_threshold=0) as conn:
        assert conn.execute("SELECT claim_id FROM claims WHERE claim_id = %s", (1,)).fetchall() == [(1,)]
        assert conn.execute("SELECT claim_id FROM claims WHERE claim_id = %s", (3,)).fetchall() == []
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
            conn.execute("SELECT lo_import(%s)", ("/etc/passwd",))
        assert "lo_import" in str(err.value)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="pg_stat_activity"):
            with conn.pipeline():
                first = conn.execute("SELECT %s::int + 1", (1,))
                conn.execute("SELECT * FROM pg_stat_activity")
                conn.execute("SELECT 3")
        assert first.fetchone() == (2,)  # the statement before the refused one got its answer
        assert conn.execute("SELECT 4").fetchone() == (4,)


def test_set_purpose_entitlement(clinic):
    with connect(clinic, "alice") as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="may not act under purpose"):
            conn.execute("SET pgveil.purpose = 'Fraud'")
        conn.execute("SET pgveil.purpose = 'Research.Marketing'")
        assert conn.execute("SHOW pgveil.purpose").fetchone() == ("Research.Marketing",)
        assert conn.execute("SELECT count(*) FROM patients").fetchone()[0] > 0
        conn.execute("RESET pgveil.purpose")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM patients")
    with pytest.raises(psycopg.OperationalError, match="may not act under purpose"):
        connect(clinic, "alice", purpose="Fraud")


def test_hot_reload_applies_from_the_next_statement_and_rejects_bad_files(clinic):
    proc, path = clinic
    original = path.read_text()
    try:
        # no auto-prepare: a statement prepared before alice's policy changed is refused (26000), see below
        with connect(clinic, "alice", prepare_threshold=None) as conn:
            assert conn.execute("SELECT count(*) FROM claims").fetchone() == (2,)
            config = yaml.safe_load(original)
            config["users"]["alice"]["attributes"]["office_location"] = ["Ohio"]
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            deadline = time.monotonic() + 10
            while conn.execute("SELECT count(*) FROM claims").fetchone() != (1,):
                assert time.monotonic() < deadline, "reload did not apply"
                time.sleep(0.2)
            path.write_text(original.replace("policies:", "policiez:"))  # invalid: rejected, old policy stays
            time.sleep(2.5)
            assert conn.execute("SELECT count(*) FROM claims").fetchone() == (1,)
    finally:
        path.write_text(original)


def test_a_reload_that_takes_unrestricted_away_ends_that_users_sessions(clinic):
    """An unrestricted session was never governed (and may be in the C relay thread): it ends, fail closed."""
    proc, path = clinic
    original = path.read_text()
    try:
        with connect(clinic, "root") as root, connect(clinic, "alice", prepare_threshold=None) as alice:
            assert root.execute("SELECT ssn FROM patients WHERE patient_id = 1").fetchone() == (SSNS[0],)
            config = yaml.safe_load(original)
            config["users"]["root"]["unrestricted"] = False
            config["users"]["root"]["attributes"] = {"office_location": ["Ohio"]}
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            deadline = time.monotonic() + 10
            with pytest.raises(psycopg.OperationalError) as err:
                while time.monotonic() < deadline:
                    root.execute("SELECT ssn FROM patients WHERE patient_id = 1").fetchone()
                    time.sleep(0.2)
            assert "no longer unrestricted" in str(err.value)
            no_secret(str(err.value))
            assert alice.execute("SELECT count(*) FROM claims").fetchone() == (2,)  # a governed session goes on
        with connect(clinic, "root") as again:  # reconnected: governed now, and no policy grants root patients
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
                again.execute("SELECT ssn FROM patients WHERE patient_id <= 3")
            no_secret(str(err.value))
    finally:
        path.write_text(original)
    deadline = time.monotonic() + 10
    while True:  # the original config is back in force before the next test
        with connect(clinic, "root") as conn:
            try:
                if conn.execute("SELECT ssn FROM patients WHERE patient_id = 1").fetchone() == (SSNS[0],):
                    break
            except psycopg.errors.InsufficientPrivilege:
                pass  # still governed: the watcher has not seen the file yet
        assert time.monotonic() < deadline, "the original config did not come back"
        time.sleep(0.2)


def test_prepared_statements_do_not_outlive_the_purpose_they_were_rewritten_for(clinic):
    with connect(clinic, "alice", purpose="Research.Marketing", prepare_threshold=None) as conn:  # SQL level
        conn.execute("PREPARE p AS SELECT count(*) FROM patients")
        assert conn.execute("EXECUTE p").fetchone()[0] > 0
        conn.execute("RESET pgveil.purpose")
        with pytest.raises(psycopg.errors.InvalidSqlStatementName, match="prepared under a different"):
            conn.execute("EXECUTE p")
        conn.execute("DEALLOCATE p")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # prepared again: judged under no purpose
            conn.execute("PREPARE p AS SELECT count(*) FROM patients")
    with connect(clinic, "alice", purpose="Research.Marketing", prepare_threshold=0) as conn:  # protocol level
        q = "SELECT count(*) FROM patients WHERE patient_id > %s"
        assert conn.execute(q, (0,)).fetchone()[0] > 0  # a named server-side statement, cached by psycopg
        conn.execute("RESET pgveil.purpose")
        # judged again under no purpose when it is next bound: refused for the real reason
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="purpose"):
            conn.execute(q, (0,))
        conn.execute("SET pgveil.purpose = 'Research.Marketing'")
        assert conn.execute(q, (0,)).fetchone()[0] > 0  # and prepared again once allowed
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_prepared_statements_follow_a_reload_transparently(clinic):
    """psycopg's auto-prepared statement after a policy reload: re-judged and re-prepared, no error."""
    proc, path = clinic
    original = path.read_text()
    try:
        with connect(clinic, "alice", prepare_threshold=0) as conn:
            q = "SELECT count(*) FROM claims WHERE claim_id > %s"
            _wait_for(lambda: conn.execute("SELECT count(*) FROM claims").fetchone() == (2,))  # earlier reloads done
            assert conn.execute(q, (0,)).fetchone() == (2,)  # prepared (Missouri only)
            config = yaml.safe_load(original)
            config["users"]["alice"]["attributes"]["office_location"] = ["Ohio"]
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            deadline = time.monotonic() + 10
            while conn.execute(q, (0,)).fetchone() != (1,):  # the same prepared statement, the new filter
                assert time.monotonic() < deadline, "reload did not apply to the prepared statement"
                time.sleep(0.2)
            with conn.pipeline():
                a = conn.execute(q, (0,))
                b = conn.execute("SELECT 'after'")
            assert a.fetchone() == (1,) and b.fetchone() == ("after",)
    finally:
        path.write_text(original)
        with connect(clinic, "alice", prepare_threshold=None) as conn:  # leave the proxy as the next tests expect
            _wait_for(lambda: conn.execute("SELECT count(*) FROM claims").fetchone() == (2,))


def _wait_for(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the proxy did not reload in time"
        time.sleep(0.2)


def test_asyncpg_as_a_governed_user(clinic):
    """asyncpg's own introspection (type lookups, set_config('jit')) works; data stays masked."""
    import asyncpg

    proc, _ = clinic

    async def run():
        conn = await asyncpg.connect(host="127.0.0.1", port=proc.port, user="alice", password=CLINIC_PASSWORDS["alice"],
                                     database=TEST_DB, server_settings={"pgveil.purpose": "Research.Marketing"})
        try:
            rows = await conn.fetch("SELECT patient_id, ssn, email FROM patients WHERE patient_id <= $1 ORDER BY 1", 3)
            extra = await conn.fetchrow("SELECT ARRAY[1,2] AS a, interval '1 day' AS i, current_schemas(false) AS s")
            return rows, extra
        finally:
            await conn.close()

    rows, extra = asyncio.run(run())
    assert [r["ssn"] for r in rows] == [None, None, None]
    no_secret(repr(rows))
    assert extra["a"] == [1, 2] and extra["s"] == ["public"]


def test_hot_reload_under_load_never_mixes_policies(clinic):
    """Clients keep querying while the config flips between two policies: every answer is one of the two."""
    import threading

    proc, path = clinic
    original = path.read_text()
    config = yaml.safe_load(original)
    config["users"]["alice"]["attributes"]["office_location"] = ["Ohio"]
    ohio = yaml.safe_dump(config, sort_keys=False)
    # Missouri: claims 1 and 4; Ohio: claim 2 (the other filters are the same)
    allowed = {((1,), (4,)), ((2,),)}
    seen, errors = set(), []
    stop = threading.Event()

    def client():
        try:
            with connect(clinic, "alice", prepare_threshold=None) as conn:
                while not stop.is_set():
                    rows = tuple(conn.execute("SELECT claim_id FROM claims ORDER BY 1").fetchall())
                    seen.add(rows)
                    if rows not in allowed:
                        errors.append(rows)
        except Exception as exc:  # any error fails the test below
            errors.append(repr(exc))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(6):
            path.write_text(ohio if i % 2 == 0 else original)
            time.sleep(1.3)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        path.write_text(original)
    assert not errors, errors[:3]
    assert seen == allowed, "both policies should have been observed while reloading"


def test_reload_that_does_not_touch_a_user_keeps_her_prepared_statements(clinic):
    proc, path = clinic
    original = path.read_text()
    try:
        with connect(clinic, "alice", prepare_threshold=0) as conn:
            q = "SELECT count(*) FROM claims WHERE claim_id > %s"
            assert conn.execute(q, (0,)).fetchone() == (2,)
            config = yaml.safe_load(original)
            config["users"]["erin"]["attributes"] = {"office_location": ["Texas"]}  # someone else changes
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            time.sleep(2.5)
            assert conn.execute(q, (0,)).fetchone() == (2,)  # still valid: alice's rewrite is unchanged
    finally:
        path.write_text(original)
