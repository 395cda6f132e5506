"""``python -m bench.dp``: accuracy and latency of differentially private answers through pgveil.

Starts the bundled PostgreSQL, loads a 1000-row PUMS-like table (age, sex, educ,
income, married; seeded, so every run sees the same data), starts ``pgveil serve``
with three DP policies over copies of it, and measures through the proxy:

- accuracy: the median relative error of five queries over ``--reps`` repetitions
  (epsilon 1 per query, row-level privacy, bounds age [0,100], income [0,500000]);
  each repetition is a fresh answer (latency_tolerance 0s: no cache), so this is
  the mechanism's error, not the cache's;
- latency: a cache hit (latency_tolerance 1h, same query again) and a miss, both
  as p50 over ``--latency-reps`` queries, against the raw aggregate run directly
  on PostgreSQL as the same role.

Not a test: it prints figures (docs/dp.md explains them).
"""
from __future__ import annotations

import argparse
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
DB = "dpbench"
TABLES = ("pums", "pums_nokeys", "pums_cached")


def pums_rows(n: int = 1000, seed: int = 2026) -> list[tuple]:
    """A PUMS-like person sample: adults 18-93 (median ~47), sex 0/1, educ 1-16 (mode 9), income log-normal (mean ~35k) with 10% zeros."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        age = int(rng.triangular(18, 93, 38))
        sex = rng.randint(0, 1)
        educ = max(1, min(16, round(rng.gauss(9.5, 2.8))))
        if rng.random() < 0.1:
            income = 0
        else:
            mu = 9.9 + 0.09 * (educ - 9) + (0.25 if 30 <= age <= 65 else 0) - 0.15 * sex
            income = min(500_000, int(rng.lognormvariate(mu, 0.9)))
        rows.append((age, sex, educ, income, int(rng.random() < 0.48)))
    return rows


QUERIES = {
    "COUNT(*)": "SELECT count(*) FROM {t}",
    "sex, AVG(income) GROUP BY sex": "SELECT sex, avg(income) FROM {t} GROUP BY sex",
    "SUM(income) WHERE age >= 40": "SELECT sum(income) FROM {t} WHERE age >= 40",
    "educ, COUNT(*) GROUP BY educ": "SELECT educ, count(*) FROM {t} GROUP BY educ",
    "AVG(age)": "SELECT avg(age) FROM {t}",
}
TARGETS = {"COUNT(*)": 0.10, "sex, AVG(income) GROUP BY sex": 1.8, "SUM(income) WHERE age >= 40": 0.85,
           "educ, COUNT(*) GROUP BY educ": 1.7, "AVG(age)": 0.35}


def _config(pg_port: int, role: str, data: Path) -> str:
    policies = []
    for t, tolerance, keys in (("pums", "0s", True), ("pums_nokeys", "0s", False), ("pums_cached", "1h", True)):
        public = "      public_keys: {sex: [0, 1], educ: [%s]}\n" % ", ".join(map(str, range(1, 17))) if keys else ""
        policies.append(f"""  - name: dp-{t}
    differential_privacy:
      table: public.{t}
      epsilon: 1.0
      latency_tolerance: {tolerance}
      bounds: {{age: [0, 100], income: [0, 500000]}}
{public}      for: everyone
""")
    return f"""listen: {{host: 127.0.0.1, port: 0}}
backend: {{dsn: "postgresql://{role}@127.0.0.1:{pg_port}/{DB}", password_env: BENCH_BACKEND_PW}}
keys: {{master_key_file: {data / 'master.key'}}}
dp: {{store: embedded, path: {data / 'dp.sqlite'}}}
users:
  analyst: {{password_env: BENCH_ANALYST_PW, groups: [analysts]}}
policies:
  - name: read
    access: {{tables: [{', '.join('public.' + t for t in TABLES)}], allow: {{groups: [analysts]}}}}
{''.join(policies)}"""


def _start(stack: ExitStack, work: Path):
    from proxy.embedded import ensure_embedded, grant_read, stop_embedded

    info = ensure_embedded(work / "pg", databases=[DB], fast_unsafe=True)
    stack.callback(lambda: stop_embedded(work / "pg"))
    rows = pums_rows()
    with psycopg.connect(host=info.host, port=info.port, user=info.superuser, password=info.superuser_password,
                         dbname=DB, autocommit=True) as conn:
        for t in TABLES:
            conn.execute(f"DROP TABLE IF EXISTS {t}")
            conn.execute(f"CREATE TABLE {t} (age int, sex int, educ int, income int, married int)")
            with conn.cursor().copy(f"COPY {t} FROM STDIN") as copy:
                for r in rows:
                    copy.write_row(r)
    grant_read(info, DB)
    config = work / "pgveil.yaml"
    config.write_text(_config(info.port, info.service_user, work))
    password = secrets.token_urlsafe(12)
    env = dict(os.environ, BENCH_BACKEND_PW=info.service_password, BENCH_ANALYST_PW=password)
    log = open(work / "pgveil.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--config", str(config)], stdout=log,
                            stderr=subprocess.STDOUT, env=env, cwd=REPO)
    stack.callback(lambda: (proc.terminate(), proc.wait(20)))
    deadline = time.monotonic() + 60
    port = None
    while time.monotonic() < deadline and port is None:
        time.sleep(0.2)
        log.seek(0)
        for line in log.read().splitlines():
            if line.startswith("pgveil: listening on"):
                port = int(line.rsplit(":", 1)[1])
    if port is None:
        log.seek(0)
        raise RuntimeError("pgveil did not start:\n" + log.read())
    return info, rows, port, password


def _exact(sql: str, info) -> dict:
    with psycopg.connect(host=info.host, port=info.port, user=info.superuser, password=info.superuser_password,
                         dbname=DB) as conn:
        return {tuple(r[:-1]): float(r[-1]) for r in conn.execute(sql).fetchall()}


def accuracy(info, port: int, password: str, reps: int) -> None:
    # prepare_threshold=None keeps every repetition a Parse + Bind of the unnamed statement (prepared DP
    # statements are re-answered past the tolerance too, docs/dp.md; this measures the plain path).
    with psycopg.connect(host="127.0.0.1", port=port, user="analyst", password=password, dbname=DB,
                         autocommit=True, prepare_threshold=None) as conn:
        print(f"\naccuracy: median relative error over {reps} fresh answers (epsilon 1, 1000 rows)")
        print(f"{'query':<44} {'median rel err':>14} {'target':>8} {'groups suppressed':>18}")
        for name, template in QUERIES.items():
            for table in (("pums", "pums_nokeys") if "GROUP BY" in name else ("pums",)):
                truth = _exact(template.format(t=table), info)
                errors, shown, expected = [], 0, 0
                for _ in range(reps):
                    got = {tuple(r[:-1]): float(r[-1]) for r in conn.execute(template.format(t=table)).fetchall()}
                    expected += len(truth)
                    for key, value in truth.items():
                        if key in got:
                            shown += 1
                            errors.append(abs(got[key] - value) / abs(value))
                med = 100 * statistics.median(errors) if errors else float("nan")
                label = name + (" (keys public)" if table == "pums" and "GROUP BY" in name else
                                " (keys thresholded)" if "GROUP BY" in name else "")
                suppressed = f"{100 * (1 - shown / expected):.1f}%" if "GROUP BY" in name else "-"
                print(f"{label:<44} {med:>13.3f}% {TARGETS[name]:>7.2f}% {suppressed:>18}")


def latency(info, port: int, password: str, reps: int) -> None:
    sql = "SELECT sum(income) FROM {t} WHERE age >= 40"

    def p50(conn, text: str) -> float:
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            conn.execute(text).fetchall()
            times.append(time.perf_counter() - t0)
        return 1000 * statistics.median(times)

    with psycopg.connect(host=info.host, port=info.port, user=info.service_user, password=info.service_password,
                         dbname=DB, autocommit=True) as direct, \
         psycopg.connect(host="127.0.0.1", port=port, user="analyst", password=password, dbname=DB,
                         autocommit=True, prepare_threshold=None) as proxied:
        raw = p50(direct, sql.format(t="pums"))
        hit = p50(proxied, sql.format(t="pums_cached"))
        miss = p50(proxied, sql.format(t="pums"))
    print(f"\nlatency p50 over {reps} queries (SUM(income) WHERE age >= 40):")
    print(f"  raw aggregate, direct to PostgreSQL   {raw:7.3f} ms")
    print(f"  pgveil, cache hit                      {hit:7.3f} ms   (target <= 1 ms)")
    print(f"  pgveil, miss (exact query + noise)     {miss:7.3f} ms   adds {miss - raw:.3f} ms (target <= 5 ms)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.dp", description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=500, help="fresh answers per accuracy query (default 500)")
    ap.add_argument("--latency-reps", type=int, default=300)
    args = ap.parse_args(argv)
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="pgveil-dpbench-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        info, _rows, port, password = _start(stack, work)
        accuracy(info, port, password, args.reps)
        latency(info, port, password, args.latency_reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
