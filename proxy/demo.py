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
    "alice": ("alice-demo", ["analysts"], {"office_location": ["Missouri"]}, "an analyst in Missouri (purpose Research.Marketing)"),
    "bob": ("bob-demo", ["analysts", "compliance"], {"office_location": ["Ohio", "Florida"]}, "a compliance analyst in Ohio and Florida"),
    "carol": ("carol-demo", ["analysts", "contractors"], {}, "a contractor excepted from the contractors' deny"),
    "erin": ("erin-demo", ["analysts", "contractors"], {}, "a contractor, denied the clinic tables"),
    "dana": ("dana-demo", ["admins"], {}, "an administrator"),
    "root": ("root-demo", [], {}, "unrestricted (no policies, still audited)"),
}


def demo_dir(data_dir: str | Path | None) -> Path:
    return Path(data_dir) if data_dir else Path(platformdirs.user_data_dir("pgveil")) / "demo"


def write_demo_config(base: Path, port: int) -> Path:
    """Write the demo config (verifiers only, never plaintext) and return its path."""
    import yaml

    users = {}
    for name, (password, groups, attributes, _about) in DEMO_USERS.items():
        entry: dict = {"password": str(make_verifier(password)), "groups": groups}
        if attributes:
            entry["attributes"] = attributes
        if name == "alice":
            entry["purposes"] = ["Research.Marketing"]
        if name == "root":
            entry["unrestricted"] = True
        users[name] = entry
    config = {
        "listen": {"host": "127.0.0.1", "port": port},
        "backend": {"dsn": "embedded", "data_dir": str(base / "embedded"), "database": DEMO_DB},
        "users": users,
        "purposes": {"Research": {"Marketing": {}, "MedicalClaims": {}}, "Fraud": {}},
    }
    path = base / "pgveil-demo.yaml"
    path.write_text("# Written by `pgveil demo`; demo passwords are printed when it starts.\n" + yaml.safe_dump(config, sort_keys=False))
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
        lines.append(f"  PGPASSWORD={password} psql 'host=127.0.0.1 port={port} dbname={DEMO_DB} user={name}'   # {about}")
    lines += [
        "",
        f"(psql is bundled at {psql} if it is not on your PATH.)",
        "Try: SELECT * FROM patients LIMIT 5;  SELECT state, count(*) FROM claims GROUP BY 1;  SELECT avg(cost) FROM visits;",
        "Policies are not enforced yet in this version: every demo user sees raw data.",
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
