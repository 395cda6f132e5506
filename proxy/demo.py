"""``pgveil demo``: a bundled PostgreSQL with a clinic dataset behind the proxy.

Starts (or reuses) the embedded server under the demo data dir, loads the
deterministic clinic dataset once, writes a demo config with one login per
demo user, serves on 127.0.0.1:6432 and prints how to connect. Ctrl-C stops
the proxy and the embedded server.
"""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import platformdirs

from .auth import make_verifier
from .config import load_config

log = logging.getLogger("pgveil.demo")

DEMO_DB = "clinic"
# Demo logins: user -> (password, groups, attributes, what they are meant to show once policies apply).
DEMO_USERS = {
    "alice": ("alice-demo", ["analysts"], {"office_location": ["Missouri"]}, "an analyst in Missouri"),
    "bob": ("bob-demo", ["analysts", "compliance"], {"office_location": ["Ohio", "Florida"]}, "a compliance analyst in Ohio and Florida"),
    "carol": ("carol-demo", ["analysts", "contractors"], {}, "a contractor excepted from the contractors' deny"),
    "erin": ("erin-demo", ["analysts", "contractors"], {}, "a contractor, denied the clinic tables"),
    "dana": ("dana-demo", ["admins"], {}, "an administrator"),
    "frank": ("frank-demo", ["researchers"], {}, "a researcher: visits only as differentially private aggregates"),
    "root": ("root-demo", [], {}, "unrestricted (no policies, still audited)"),
}


# Purpose each demo user may act under (patients are limited to Research).
DEMO_PURPOSES = {"alice": "Research.Marketing", "bob": "Research.MedicalClaims", "carol": "Research.Marketing"}


def demo_dir(data_dir: str | Path | None) -> Path:
    return Path(data_dir) if data_dir else Path(platformdirs.user_data_dir("pgveil")) / "demo"


# The demo's policies: the shape of ../shared/docs/pgveil.example.yaml on the clinic tables.
DEMO_POLICIES_YAML = """
purposes:
  Research: {Marketing: {}, MedicalClaims: {}}
  Fraud: {}
tags:
  public.patients: [PHI]
  public.patients.ssn: [PII]
  public.patients.email: [PII]
  public.patients.zip: [QI]
  public.patients.birth_year: [QI]
tables:
  public.patients: {key: patient_id}
  public.claims: {key: claim_id, event_time: filed_at}
  public.visits: {key: visit_id}
policies:
  - name: analysts-read-clinic
    access:
      tables: [public.patients, public.claims, public.visits]
      allow: {groups: [analysts, admins]}
      deny: {groups: [contractors]}
      deny_exceptions: {users: [carol]}
  - name: researchers-read-visits
    access: {tables: [public.visits], allow: {groups: [researchers]}}
  - name: dp-visits-for-researchers
    differential_privacy:
      table: public.visits
      epsilon: 0.5
      latency_tolerance: 1h
      budget: {epsilon: 10.0, per: 1 day}
      bounds: {cost: [0, 5000], duration_min: [0, 600]}
      for: {groups: [researchers]}
  - name: hash-pii
    mask: {tag: PII, type: hash, for: {everyone_except: {groups: [compliance, admins]}}}
  - name: ssn-by-role
    priority: override
    mask:
      column: public.patients.ssn
      items:
        - when: {groups: [compliance]}
          type: partial
          show_last: 4
        - when: {groups: [admins]}
          type: none
        - otherwise: {type: "null"}
  - name: ip-last-octet
    mask: {column: public.visits.client_ip, type: regex, pattern: '\\d+$', replacement: XXX,
           for: {everyone_except: {groups: [admins]}}}
  - name: coarse-cost
    mask: {column: public.visits.cost, type: round, step: 100, for: everyone}
  - name: month-of-visit
    mask: {column: public.visits.visited_at, type: round, unit: month, for: {everyone_except: {groups: [admins]}}}
  - name: mask-us-accounts
    mask: {column: public.claims.account_no, type: "null", where: "country = 'USA'",
           for: {everyone_except: {groups: [compliance]}}}
  - name: claims-in-my-state
    row_filter: {table: public.claims, match: {column: state, attribute: office_location},
                 for: {everyone_except: {groups: [admins]}}}
  - name: recent-claims
    row_filter: {table: public.claims, time_window: 1095 days, for: {everyone_except: {groups: [admins]}}}
  - name: big-claims-need-compliance
    row_filter: {table: public.claims, where: "amount < 10000 OR pgveil.user_name() = 'reviewer'",
                 for: {everyone_except: {groups: [compliance]}}}
  - name: sample-visits
    row_filter: {table: public.visits, minimize: {percent: 10}, for: {everyone_except: {groups: [admins]}}}
  - name: k-anon-quasi-ids
    mask: {columns: [public.patients.zip, public.patients.birth_year], type: k_anonymize, k: 5,
           for: {everyone_except: {groups: [admins]}}}
  - name: phi-for-research-only
    limit_to_purpose: {tag: PHI, purposes: [Research], for: {everyone_except: {groups: [admins]}}}
"""


def write_demo_config(base: Path, port: int) -> Path:
    """Write the demo config (verifiers only, never plaintext) and return its path."""
    import yaml

    users = {}
    for name, (password, groups, attributes, _about) in DEMO_USERS.items():
        entry: dict = {"password": str(make_verifier(password)), "groups": groups}
        if attributes:
            entry["attributes"] = attributes
        if name in DEMO_PURPOSES:
            entry["purposes"] = [DEMO_PURPOSES[name]]
        if name == "root":
            entry["unrestricted"] = True
        users[name] = entry
    config = {
        "listen": {"host": "127.0.0.1", "port": port},
        "backend": {"dsn": "embedded", "data_dir": str(base / "embedded"), "database": DEMO_DB},
        "keys": {"master_key_file": str(base / "master.key")},
        "audit": {"path": str(base / "audit")},
        "users": users,
    }
    path = base / "pgveil-demo.yaml"
    path.write_text("# Written by `pgveil demo`; demo passwords are printed when it starts.\n"
                    + yaml.safe_dump(config, sort_keys=False) + DEMO_POLICIES_YAML)
    return path


def prepare_demo(base: Path, port: int) -> Path:
    """Start the embedded server, load the dataset if needed, write the config."""
    from .demo_data import load_demo_dataset
    from .embedded import ensure_embedded, grant_read

    base.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    info = ensure_embedded(base / "embedded", databases=[DEMO_DB])
    counts = asyncio.run(load_demo_dataset(info.dsn(DEMO_DB, superuser=True)))
    grant_read(info, DEMO_DB)
    log.info("demo data ready in %.1fs: %s", time.monotonic() - started,
             ", ".join(f"{t} {n:,} rows" for t, n in counts.items()))
    return write_demo_config(base, port)


def _instructions(port: int) -> str:
    from .embedded import embedded_binary

    psql = embedded_binary("psql")
    lines = [
        "",
        f"pgveil demo is running on 127.0.0.1:{port} (database {DEMO_DB!r}). Connect as any demo user:",
        "",
    ]
    for name, (password, _g, _a, about) in DEMO_USERS.items():
        options = f"PGOPTIONS='-c pgveil.purpose={DEMO_PURPOSES[name]}' " if name in DEMO_PURPOSES else ""
        lines.append(f"  {options}PGPASSWORD={password} psql 'host=127.0.0.1 port={port} dbname={DEMO_DB} user={name}'"
                     f"   # {about}")
    lines += [
        "",
        f"(psql is bundled at {psql} if it is not on your PATH.)",
        "What they see (policies of pgveil-demo.yaml in the demo data dir):",
        "  root   everything, raw.",
        "  dana   (admins) raw patients and SSNs, claims of every state (under 10000 only), every visit.",
        "  alice  patients only under a purpose (PGOPTIONS above, or SET pgveil.purpose = 'Research.Marketing';):",
        "         SSNs NULL, emails hashed, rare (zip, birth_year)",
        "         combinations blanked (k=5); claims only from Missouri, last 3 years, under 10000, US account numbers",
        "         hidden; visits a stable 10% sample with costs rounded to 100, IPs ending in XXX, dates to the month.",
        "  bob    (compliance) SSNs showing the last 4 digits, emails in clear, all claim amounts, Ohio and Florida only.",
        "  erin   (contractor) refused the clinic tables; carol (excepted contractor) reads them like alice.",
        "  frank  (researcher) visits only as noisy aggregates (epsilon 0.5 each, 10 per day; `pgveil budget`):",
        "         SELECT count(*), avg(cost) FROM visits;   SELECT * FROM visits;  -- refused",
        "Try: SELECT * FROM patients LIMIT 5;  SELECT state, count(*) FROM claims GROUP BY 1;  SELECT * FROM visits LIMIT 5;",
        "     SELECT pg_read_file('/etc/passwd');   -- refused for governed users",
        "Press Ctrl-C to stop the proxy and the demo database.",
        "",
    ]
    return "\n".join(lines)


def run_demo(port: int = 6432, data_dir: str | Path | None = None) -> int:
    from .embedded import stop_embedded
    from .runner import install_event_loop_policy, serve

    base = demo_dir(data_dir)
    try:
        config = load_config(prepare_demo(base, port))
        install_event_loop_policy()
        asyncio.run(serve(config, on_ready=lambda proxy: print(_instructions(proxy.port), flush=True)))
    finally:
        stop_embedded(base / "embedded")
        print("pgveil demo stopped.", flush=True)
    return 0
