"""A deterministic demo clinic dataset (patients, claims, visits) and its loader.

What it does: :func:`generate` builds about 130k plausible rows from a seeded
``random.Random`` and a fixed reference date (2026-06-30 UTC), so the same seed
always gives the same rows, whatever today is. :func:`load_demo_dataset`
creates the three tables in ``public`` (with indexes), bulk-loads them with
binary COPY in one transaction when they are empty, runs ANALYZE and returns
row counts.

The shape matches ``pgveil.example.yaml``: ``claims.state`` holds the US state
names used as ``office_location`` (Missouri, Ohio, Florida, ...), some claim
amounts exceed 10000, ``claims.country`` is mostly 'USA', ``visits.client_ip``
is dotted-quad text, and (zip, birth_year) has both rare and common groups so
k-anonymity has work to do.

What it must not touch: anything but the tables ``public.patients``,
``public.claims`` and ``public.visits`` of the database it is given (``force``
truncates exactly those three); no grants (see ``proxy.embedded.grant_read``).
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

__all__ = ["REFERENCE_DATE", "TABLES", "generate", "load_demo_dataset"]

#: Every timestamp is before this instant; "recent" means relative to it.
REFERENCE_DATE = datetime(2026, 6, 30, tzinfo=timezone.utc)
_WINDOW_DAYS = 3 * 365

N_PATIENTS = 20_000
N_CLAIMS = 50_000
N_VISITS = 60_000

TABLES: dict[str, tuple[str, ...]] = {
    "patients": ("patient_id", "name", "ssn", "email", "zip", "birth_year", "state"),
    "claims": ("claim_id", "patient_id", "state", "amount", "account_no", "country", "filed_at"),
    "visits": ("visit_id", "patient_id", "cost", "duration_min", "client_ip", "visited_at"),
}

_DDL = """
CREATE TABLE IF NOT EXISTS public.patients (
    patient_id  int PRIMARY KEY,
    name        text NOT NULL,
    ssn         text NOT NULL,
    email       text NOT NULL,
    zip         text NOT NULL,
    birth_year  int NOT NULL,
    state       text NOT NULL
);
CREATE TABLE IF NOT EXISTS public.claims (
    claim_id    bigint PRIMARY KEY,
    patient_id  int NOT NULL REFERENCES public.patients (patient_id),
    state       text NOT NULL,
    amount      numeric(12,2) NOT NULL,
    account_no  text,
    country     text NOT NULL,
    filed_at    timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS public.visits (
    visit_id     bigint PRIMARY KEY,
    patient_id   int NOT NULL REFERENCES public.patients (patient_id),
    cost         numeric(10,2) NOT NULL,
    duration_min int NOT NULL,
    client_ip    text NOT NULL,
    visited_at   timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS patients_zip_birth_year_idx ON public.patients (zip, birth_year);
CREATE INDEX IF NOT EXISTS claims_patient_id_idx ON public.claims (patient_id);
CREATE INDEX IF NOT EXISTS claims_state_idx ON public.claims (state);
CREATE INDEX IF NOT EXISTS claims_filed_at_idx ON public.claims (filed_at);
CREATE INDEX IF NOT EXISTS visits_patient_id_idx ON public.visits (patient_id);
CREATE INDEX IF NOT EXISTS visits_visited_at_idx ON public.visits (visited_at);
"""

# (state, weight, 3-digit zip prefixes, clinic network /16 prefixes). Weights loosely follow
# population, with the example config's office locations (Missouri, Ohio, Florida) prominent.
_STATES: list[tuple[str, int, tuple[int, ...], tuple[str, ...]]] = [
    ("California", 14, (900, 902, 913, 917, 921, 926, 940, 945, 950, 958), ("164.16", "131.179")),
    ("Texas", 11, (750, 752, 761, 770, 773, 782, 787, 799), ("129.116", "198.81")),
    ("Florida", 10, (320, 322, 327, 331, 334, 336, 339, 346), ("128.227", "131.94")),
    ("New York", 8, (100, 104, 112, 117, 122, 130, 142), ("128.59", "192.231")),
    ("Ohio", 8, (430, 432, 441, 442, 450, 452, 436), ("140.254", "129.22")),
    ("Missouri", 8, (630, 631, 641, 650, 652, 658), ("128.252", "161.130")),
    ("Pennsylvania", 6, (150, 152, 170, 180, 191, 194), ("128.91", "130.49")),
    ("Illinois", 6, (600, 604, 606, 610, 617, 625), ("128.135", "130.126")),
    ("Georgia", 5, (300, 303, 310, 314, 317), ("128.61", "143.215")),
    ("Michigan", 4, (480, 482, 488, 490, 494), ("141.211", "35.8")),
    ("Washington", 3, (980, 981, 984, 992), ("128.95", "140.142")),
    ("Arizona", 3, (850, 852, 857, 860), ("128.196", "129.219")),
    ("Colorado", 2, (800, 802, 805, 809), ("128.138", "129.82")),
    ("Kansas", 2, (660, 662, 666, 672), ("129.237", "129.130")),
    ("Massachusetts", 2, (10, 21, 24, 27), ("128.103", "18.9")),
]

_FIRST = (
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara Richard Susan "
    "Joseph Jessica Thomas Sarah Charles Karen Christopher Lisa Daniel Nancy Matthew Betty Anthony Sandra "
    "Mark Margaret Donald Ashley Steven Kimberly Andrew Emily Paul Donna Joshua Michelle Kenneth Carol "
    "Kevin Amanda Brian Melissa George Deborah Timothy Stephanie Jose Maria Luis Ana Wei Mei Priya Arjun "
    "Fatima Omar Hiroshi Yuki Olga Ivan Aisha Kwame Sofia Mateo Chloe Liam Noah Emma Olivia Ava Ethan"
).split()
_LAST = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez "
    "Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark "
    "Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams "
    "Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Chen Patel Kim Singh Kowalski Murphy "
    "O'Brien Schmidt Novak Okafor Tanaka Ivanova Haddad Rossi Dubois Larsen"
).split()
_MAIL_DOMAINS = (("gmail.com", 40), ("yahoo.com", 15), ("outlook.com", 12), ("hotmail.com", 8),
                 ("icloud.com", 8), ("aol.com", 4), ("comcast.net", 4), ("proton.me", 2))
_DURATIONS = ((15, 25), (20, 20), (30, 25), (45, 12), (60, 10), (90, 4), (120, 2), (240, 1.5), (480, 0.5))


class _Weighted:
    """Fast repeated weighted choice (``random.choices`` rebuilds cumulative weights per call)."""

    def __init__(self, items: list[Any], weights: list[float]):
        self.items = items
        self.cum = list(itertools.accumulate(weights))
        self.total = self.cum[-1]

    def pick(self, rng: random.Random) -> Any:
        return self.items[bisect.bisect_right(self.cum, rng.random() * self.total, 0, len(self.cum) - 1)]


def _zip_areas(rng: random.Random) -> dict[str, _Weighted]:
    """Per state, ~20 five-digit zips with Zipf weights: a few big-city zips hold most patients,
    a long tail holds a handful each, so (zip, birth_year) groups range from 1 to dozens."""
    areas = {}
    for state, _, prefixes, _ in _STATES:
        zips = sorted({f"{rng.choice(prefixes):03d}{rng.randrange(1, 100):02d}" for _ in range(40)})[:20]
        rng.shuffle(zips)
        areas[state] = _Weighted(zips, [1 / (rank + 1) ** 1.7 for rank in range(len(zips))])
    return areas


def _birth_year(rng: random.Random) -> int:
    # Two humps: working-age adults and retirees (Medicare-heavy clinic), clipped to real ages.
    mean, sd = (1982, 14) if rng.random() < 0.7 else (1952, 9)
    return min(2024, max(1925, round(rng.gauss(mean, sd))))


def _ssn(rng: random.Random, seen: set[str]) -> str:
    while True:
        area = rng.randrange(1, 900)
        if area == 666:
            continue
        ssn = f"{area:03d}-{rng.randrange(1, 100):02d}-{rng.randrange(1, 10000):04d}"
        if ssn not in seen:
            seen.add(ssn)
            return ssn


def _moment(rng: random.Random) -> datetime:
    """An instant in the 3 years before the reference date, denser in recent months
    (a growing practice), mostly on weekdays and in office hours (UTC-ish, good enough)."""
    days_ago = int(_WINDOW_DAYS * rng.random() ** 1.25) + 1
    day = REFERENCE_DATE - timedelta(days=days_ago)
    if day.weekday() >= 5 and rng.random() < 0.75:
        day -= timedelta(days=day.weekday() - 4)  # weekend -> the Friday before
    minute = int(rng.triangular(7 * 60, 19 * 60, 11 * 60))
    return day + timedelta(minutes=minute, seconds=rng.randrange(60))


def _cents(value: float, lo: float, hi: float) -> Decimal:
    return Decimal(int(round(min(hi, max(lo, value)) * 100))).scaleb(-2)


def _account(rng: random.Random, country: str) -> str:
    if country == "USA":  # routing number + account
        return f"{rng.randrange(10**8, 10**9)}-{rng.randrange(10**9, 10**12)}"
    if country == "Canada":  # transit-institution-account
        return f"{rng.randrange(10**4, 10**5)}-{rng.randrange(1, 1000):03d}-{rng.randrange(10**6, 10**7)}"
    return f"{rng.randrange(10**17, 10**18)}"  # Mexico: 18-digit CLABE


def generate(
    seed: int = 7,
    *,
    patients: int = N_PATIENTS,
    claims: int = N_CLAIMS,
    visits: int = N_VISITS,
) -> Iterator[tuple[str, list[tuple]]]:
    """Yield ``(table_name, rows)`` for patients, claims, visits, in that (foreign-key) order.

    Rows are tuples in the column order of :data:`TABLES`; amounts are ``Decimal``,
    timestamps aware UTC ``datetime``. Pure: same arguments, same rows. Tables are
    generated lazily, so a caller may stop after the first.
    """
    rng = random.Random(seed)
    zips = _zip_areas(rng)
    state_pick = _Weighted([s for s, *_ in _STATES], [w for _, w, *_ in _STATES])
    networks = {s: nets for s, _, _, nets in _STATES}
    domains = _Weighted([d for d, _ in _MAIL_DOMAINS], [w for _, w in _MAIL_DOMAINS])
    countries = _Weighted(["USA", "Canada", "Mexico"], [92, 5, 3])

    first_id = 1001
    ssns: set[str] = set()
    emails: set[str] = set()
    home: list[str] = []
    patient_rows = []
    for i in range(patients):
        state = state_pick.pick(rng)
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        year = _birth_year(rng)
        local = f"{first}.{last}".lower().replace("'", "")
        email = f"{local}@{domains.pick(rng)}"
        while email in emails:
            email = f"{local}{rng.randrange(1, 10000)}@{domains.pick(rng)}"
        emails.add(email)
        home.append(state)
        patient_rows.append((first_id + i, f"{first} {last}", _ssn(rng, ssns), email, zips[state].pick(rng), year, state))
    yield "patients", patient_rows

    # Heavy-tailed activity: a few chronic patients file many claims and visit often.
    activity = _Weighted(list(range(patients)), [min(40.0, rng.paretovariate(1.8)) for _ in range(patients)])
    billing_country = [countries.pick(rng) for _ in range(patients)]
    accounts = [_account(rng, c) for c in billing_country]

    claim_rows = []
    for i in range(claims):
        p = activity.pick(rng)
        # Mostly filed at the home state's office; sometimes while travelling.
        state = home[p] if rng.random() < 0.9 else state_pick.pick(rng)
        amount = rng.lognormvariate(math.log(420), 1.3)
        if rng.random() < 0.004:  # surgeries and inpatient stays
            amount = rng.uniform(20_000, 180_000)
        account = accounts[p] if rng.random() > 0.02 else None  # a few claims without an account
        claim_rows.append((
            50_000_001 + i, first_id + p, state, _cents(amount, 15, 250_000), account,
            billing_country[p], _moment(rng),
        ))
    claim_rows.sort(key=lambda r: r[6])  # ids ascend with filing time, as a sequence would give
    claim_rows = [(50_000_001 + i, *r[1:]) for i, r in enumerate(claim_rows)]
    yield "claims", claim_rows

    duration_pick = _Weighted([d for d, _ in _DURATIONS], [w for _, w in _DURATIONS])
    visit_rows = []
    for i in range(visits):
        p = activity.pick(rng)
        duration = duration_pick.pick(rng)
        if rng.random() < 0.85:  # from a clinic network of the home state
            net = rng.choice(networks[home[p]])
            ip = f"{net}.{rng.randrange(0, 64)}.{rng.randrange(1, 255)}"
        else:  # telehealth from a residential address
            ip = f"{rng.choice((24, 47, 67, 73, 98, 108, 174))}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        cost = rng.lognormvariate(math.log(95 + 2.2 * duration), 0.6)
        visit_rows.append((i, first_id + p, _cents(cost, 15, 25_000), duration, ip, _moment(rng)))
    visit_rows.sort(key=lambda r: r[5])
    visit_rows = [(1 + i, *r[1:]) for i, r in enumerate(visit_rows)]
    yield "visits", visit_rows


async def load_demo_dataset(dsn: str, *, force: bool = False, seed: int = 7) -> dict[str, int]:
    """Create the demo tables if absent, load them if empty (or ``force``), ANALYZE, return row counts.

    The load is one transaction under an advisory lock, so concurrent loaders do
    not double-load and a failure leaves the tables empty. Tables holding other
    data are left alone unless ``force`` (which truncates exactly these three).
    """
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(_DDL)
        async with conn.transaction():
            # Serialise concurrent loaders; released at commit.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('pgveil.demo_data'))")
            if force:
                await conn.execute("TRUNCATE public.visits, public.claims, public.patients")
            counts = await _counts(conn)
            loaded = False
            if not any(counts.values()):
                await _copy_all(conn, generate(seed))
                loaded = True
        if loaded:
            await conn.execute("ANALYZE public.patients, public.claims, public.visits")
            counts = await _counts(conn)
        return counts
    finally:
        await conn.close()


async def _copy_all(conn, tables: Iterator[tuple[str, list[tuple]]]) -> None:
    """COPY each table while the next one is generated in a worker thread: the server's
    share of a COPY (foreign-key checks, index builds) then overlaps Python's generation."""
    import asyncio

    loop = asyncio.get_running_loop()
    pending = loop.run_in_executor(None, next, tables, None)
    while (item := await pending) is not None:
        table, rows = item
        pending = loop.run_in_executor(None, next, tables, None)
        await conn.copy_records_to_table(table, records=rows, columns=TABLES[table], schema_name="public")


async def _counts(conn) -> dict[str, int]:
    return {t: await conn.fetchval(f"SELECT count(*) FROM public.{t}") for t in TABLES}
