"""Differentially private answers on the wire: the answer cache, the budget ledger, the exact aggregates.

What it does: for a ``rewrite.DPRequest`` (a pure plan), charge the subject's
budget before anything runs, run the exact aggregate as the service role on a
pool of its own, noise it (rewrite.dp.release), cache the released values for
the table's latency tolerance and render the answer as literal-only SQL for the
session's backend. ``store`` keeps the cache and the ledger (SQLite for one
process, a PostgreSQL schema for several); ``service`` ties it together.

What it must not touch: the client protocol (the session suspends and resumes
around a DP statement), noise (rewrite.dp), policy decisions.
"""
from .service import DPService
from .store import BudgetExceeded, Charge, open_store

__all__ = ["BudgetExceeded", "Charge", "DPService", "open_store"]
