"""``pgveil budget --config F [--user U]``: what each subject spent of their DP budgets."""
from __future__ import annotations

import asyncio
import math
import sys

from rewrite.policy import ConfigError

from .store import open_store


def _fmt(value: float | None) -> str:
    return "unlimited" if value is None or math.isinf(value) else f"{value:g}"


async def _report(config, users: list[str]) -> list[str]:
    async def backend_pool():
        import asyncpg

        from ..dsn import service_connect_kwargs
        from ..runner import backend_target, backend_tls_context

        target, password = backend_target(config)
        tls = backend_tls_context(config, target)
        return await asyncpg.create_pool(min_size=1, max_size=1, **service_connect_kwargs(
            target, password, tls, config.backend.connect_timeout, application_name="pgveil-budget"))

    store = open_store(config.dp, backend_pool)
    lines = [f"{'user':<12} {'policy':<20} {'table':<24} {'spent':>8} {'budget':>10} {'remaining':>10} "
             f"{'period':>9} {'answers':>7}"]
    try:
        for user in users:
            for s in await store.spending(user):
                remaining = None if s.cap is None or math.isinf(s.cap) else max(0.0, s.cap - s.spent)
                period = f"{s.period / 3600:g}h" if s.period else "-"
                lines.append(f"{user:<12} {s.policy:<20} {s.table:<24} {s.spent:>8g} {_fmt(s.cap):>10} "
                             f"{_fmt(remaining):>10} {period:>9} {s.answers:>7}")
    finally:
        await store.close()
    return lines


def run_budget(config_path: str, user: str | None) -> int:
    from ..config import load_config

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"pgveil: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    if user is not None and user not in config.users:
        print(f'pgveil: user "{user}" is not in {config_path}', file=sys.stderr)
        return 2
    users = [user] if user else sorted(config.users)
    try:
        lines = asyncio.run(_report(config, users))
    except (OSError, ConfigError) as exc:
        print(f"pgveil: cannot read the DP store: {exc}", file=sys.stderr)
        return 3
    print("\n".join(lines))
    if len(lines) == 1:
        print("(no differentially private answers in the current periods)")
    return 0
