"""The demo clinic dataset: deterministic generation, plausible shape, loading into a real server.

Self-contained: starts its own throwaway embedded server (fsync off).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import asyncpg
import pytest

from tests.pgfixture import scratch_dir
from proxy.demo_data import REFERENCE_DATE, TABLES, generate, load_demo_dataset
from proxy.embedded import ensure_embedded, grant_read, stop_embedded

OFFICE_LOCATIONS = {"Missouri", "Ohio", "Florida"}  # from pgveil.example.yaml


@pytest.fixture(scope="module")
def dataset():
    return dict(generate(seed=7))


@pytest.fixture(scope="module")
def clinic():
    data_dir = scratch_dir() / "pg"
    info = ensure_embedded(data_dir, databases=["clinic"], fast_unsafe=True)
    try:
        yield info
    finally:
        stop_embedded(data_dir)
        shutil.rmtree(data_dir.parent, ignore_errors=True)


def test_generate_is_deterministic(dataset):
    again = dict(generate(seed=7))
    assert again == dataset
    # Lazy per table: the first table alone is reproducible cheaply and seed-dependent.
    first_7 = next(generate(seed=7))
    first_8 = next(generate(seed=8))
    assert first_7 == ("patients", dataset["patients"])
    assert first_8[1] != first_7[1]


def test_sizes_and_shapes(dataset):
    assert list(dataset) == ["patients", "claims", "visits"]
    assert sum(len(rows) for rows in dataset.values()) >= 100_000
    for table, rows in dataset.items():
        assert all(len(r) == len(TABLES[table]) for r in rows)
        ids = [r[0] for r in rows]
        assert len(set(ids)) == len(ids), f"duplicate keys in {table}"


def test_patients_look_real(dataset):
    patients = dataset["patients"]
    assert all(re.fullmatch(r"\d{3}-\d{2}-\d{4}", p[2]) for p in patients)
    assert all(re.fullmatch(r"\d{5}", p[4]) for p in patients)
    assert all(re.fullmatch(r"[^@\s]+@[a-z.]+\.[a-z]+", p[3]) for p in patients)
    assert len({p[3] for p in patients}) == len(patients)
    assert all(1900 < p[5] <= REFERENCE_DATE.year for p in patients)
    assert OFFICE_LOCATIONS <= {p[6] for p in patients}


def test_quasi_identifiers_have_rare_and_common_groups(dataset):
    groups = Counter((p[4], p[5]) for p in dataset["patients"])
    sizes = list(groups.values())
    rare_rows = sum(n for n in sizes if n < 5)
    common_rows = sum(n for n in sizes if n >= 20)
    assert sizes.count(1) > 100  # unique people: what k-anonymity is for
    assert rare_rows > 0.1 * len(dataset["patients"])
    assert common_rows > 0.05 * len(dataset["patients"])


def test_claims_match_example_policies(dataset):
    claims = dataset["claims"]
    patient_ids = {p[0] for p in dataset["patients"]}
    assert all(c[1] in patient_ids for c in claims)
    states = Counter(c[2] for c in claims)
    assert OFFICE_LOCATIONS <= set(states)
    assert all(isinstance(c[3], Decimal) and c[3] == c[3].quantize(Decimal("0.01")) for c in claims)
    big = sum(c[3] > 10_000 for c in claims)
    assert 0 < big < 0.05 * len(claims)
    countries = Counter(c[5] for c in claims)
    assert set(countries) == {"USA", "Canada", "Mexico"}
    assert countries["USA"] > 0.8 * len(claims)
    start = REFERENCE_DATE - timedelta(days=3 * 365 + 1)
    assert all(start <= c[6] < REFERENCE_DATE for c in claims)
    recent = sum(c[6] >= REFERENCE_DATE - timedelta(days=365) for c in claims)
    assert 0.2 * len(claims) < recent < 0.8 * len(claims)  # the 365-day window filter has work to do


def test_visits_look_real(dataset):
    visits = dataset["visits"]
    ip = re.compile(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})")
    for v in visits:
        m = ip.fullmatch(v[4])
        assert m and all(0 <= int(o) <= 255 for o in m.groups()), v[4]
        assert 0 < v[3] <= 600
        assert Decimal("0") < v[2] < Decimal("100000")
        assert v[5] < REFERENCE_DATE


def test_load_into_real_server(clinic, dataset):
    dsn = clinic.dsn("clinic", superuser=True)
    started = time.monotonic()
    counts = asyncio.run(load_demo_dataset(dsn))
    elapsed = time.monotonic() - started
    assert counts == {t: len(rows) for t, rows in dataset.items()}
    # The target is < 15 s on 2 idle cores (about 4 s measured); the bound here is looser
    # because this machine is shared with benchmarks, and a wall-clock test must not flake.
    assert elapsed < 60, f"load took {elapsed:.1f}s"

    # Loading again is a no-op (no duplicates, no error).
    assert asyncio.run(load_demo_dataset(dsn)) == counts

    grant_read(clinic, "clinic")

    async def check():
        conn = await asyncpg.connect(clinic.dsn("clinic"))  # the least-privileged service role
        try:
            joined = await conn.fetchval(
                "SELECT count(*) FROM claims c JOIN patients p USING (patient_id)"
            )
            assert joined == counts["claims"]
            rows = await conn.fetch(
                "SELECT c.state, count(*) AS n, max(c.amount) AS top FROM claims c"
                " JOIN patients p ON p.patient_id = c.patient_id"
                " WHERE c.state = ANY($1::text[]) GROUP BY c.state ORDER BY c.state",
                sorted(OFFICE_LOCATIONS),
            )
            assert [r["state"] for r in rows] == sorted(OFFICE_LOCATIONS)
            assert all(r["n"] > 100 for r in rows)
            first = dataset["patients"][0]
            got = await conn.fetchrow("SELECT * FROM patients WHERE patient_id = $1", first[0])
            assert tuple(got) == first
            analyzed = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_user_tables"
                " WHERE relname IN ('patients','claims','visits') AND last_analyze IS NOT NULL"
            )
            assert analyzed == 3
        finally:
            await conn.close()

    asyncio.run(check())


def test_force_reloads_the_same_rows(clinic, dataset):
    dsn = clinic.dsn("clinic", superuser=True)
    asyncio.run(load_demo_dataset(dsn))

    async def tamper_and_reload():
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("DELETE FROM visits WHERE visit_id <= 10")
            assert await conn.fetchval("SELECT count(*) FROM visits") == len(dataset["visits"]) - 10
        finally:
            await conn.close()
        return await load_demo_dataset(dsn, force=True)

    counts = asyncio.run(tamper_and_reload())
    assert counts["visits"] == len(dataset["visits"])
