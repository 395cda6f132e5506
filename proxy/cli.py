"""The ``pgveil`` command line: serve, check, explain, demo, passwd, schema, audit, --version."""
from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys

from rewrite.policy import ConfigError

from . import __version__


def _cmd_serve(args) -> int:
    from .config import load_config
    from .runner import install_event_loop_policy, serve

    try:
        config = load_config(args.config)
        install_event_loop_policy()
        asyncio.run(serve(config, on_ready=lambda p: print(f"pgveil: listening on {config.listen.host}:{p.port}", flush=True),
                          config_path=args.config))
    except ConfigError as exc:
        print(f"pgveil: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_passwd(args) -> int:
    from .auth import make_verifier

    password = args.password
    if password is None:
        if sys.stdin.isatty():
            password = getpass.getpass("Password: ")
            if getpass.getpass("Again: ") != password:
                print("pgveil: passwords do not match", file=sys.stderr)
                return 1
        else:
            password = sys.stdin.readline().rstrip("\n")
    if not password:
        print("pgveil: empty password", file=sys.stderr)
        return 1
    print(make_verifier(password, iterations=args.iterations))
    return 0


def _cmd_schema(args) -> int:
    import json

    from rewrite.policy.schema import json_schema

    from .config import Config

    print(json.dumps(json_schema(Config), indent=2))
    return 0


def _cmd_check(args) -> int:
    from .check import run_check

    return run_check(args.config, offline=args.offline)


def _cmd_explain(args) -> int:
    from .explain import run_explain

    return run_explain(args.config, args.user, args.sql, purpose=args.purpose, project=args.project, as_json=args.json)


def _cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(port=args.port, data_dir=args.data_dir)


def _cmd_audit(args) -> int:
    from .audit.summary import format_summary, parse_since, summarize

    try:
        since = parse_since(args.since)
    except ValueError as exc:
        print(f"pgveil: {exc}", file=sys.stderr)
        return 2
    if args.dir:
        directory = args.dir
    else:
        from .config import load_config

        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(f"pgveil: invalid configuration:\n{exc}", file=sys.stderr)
            return 2
        if config.audit is None:
            print(f"pgveil: {args.config} has no audit section", file=sys.stderr)
            return 2
        directory = config.audit.path
    print(format_summary(summarize(directory, since)))
    return 0


def _cmd_budget(args) -> int:
    from .dp.budget_report import run_budget

    return run_budget(args.config, args.user)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pgveil", description="A data-governance proxy for PostgreSQL.")
    parser.add_argument("--version", action="version", version=f"pgveil {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug information")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the proxy")
    p.add_argument("--config", "-c", required=True, help="path of the pgveil YAML config")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("passwd", help="print a SCRAM-SHA-256 verifier for a password (read from the terminal or stdin)")
    p.add_argument("--password", help="the password (prefer the prompt or stdin: arguments show in ps)")
    p.add_argument("--iterations", type=int, default=4096)
    p.set_defaults(func=_cmd_passwd)

    p = sub.add_parser("check", help="validate a config file, and against the backend's catalog unless --offline")
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--offline", action="store_true", help="validate the file only; do not connect to the backend")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("explain", help="show the decisions and the rewritten SQL for a user's statement (no proxy needed)")
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--user", "-u", required=True, help="the login to simulate")
    p.add_argument("--purpose", help="act under this purpose (as SET pgveil.purpose)")
    p.add_argument("--project", help="act in this project (as SET pgveil.project)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("sql", help="the SQL text to explain (- reads it from stdin)")
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser("schema", help="print the JSON Schema of the config file, for editors")
    p.set_defaults(func=_cmd_schema)

    p = sub.add_parser("demo", help="start a bundled PostgreSQL with a clinic dataset and the proxy")
    p.add_argument("--port", type=int, default=6432)
    p.add_argument("--data-dir", default=None, help="where the demo's PostgreSQL lives (default: the user's data dir)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("audit", help="summarize recent audit records (top users, tables, refusals)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", "-c", help="pgveil config whose audit.path to read")
    where.add_argument("--dir", help="audit directory to read instead of --config")
    p.add_argument("--since", default="1h", help="window to summarize: 30m, 1h, 2d, 1w (default 1h)")
    p.set_defaults(func=_cmd_audit)

    p = sub.add_parser("budget", help="show differential-privacy budget spending per user, policy and table")
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--user", "-u", help="one user (default: every user in the config)")
    p.set_defaults(func=_cmd_budget)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
