"""Differentially private aggregates over tables under a ``differential_privacy`` policy.

What it does, in three pure steps (no I/O; the proxy runs the SQL and keeps the state):

1. ``query.read_query``: check that a statement is an aggregate query pgveil can
   bound (COUNT(*), COUNT(col), COUNT(DISTINCT col), SUM(col), AVG(col) over one
   DP table, WHERE of provably error-free predicates, GROUP BY columns, HAVING /
   ORDER BY / LIMIT after the noise) and describe it, or refuse it;
2. ``plan.plan_query``: the exact aggregate to run (clamped, fixed point,
   per-person contribution bounded), the noise of each measurement, the epsilon
   split and the canonical cache key, as a ``DPPlan``;
3. ``release.release`` adds the noise (``mechanism``: OpenDP's discrete Laplace)
   and selects the groups to show; ``render.answer_sql`` turns released values
   into a literal-only SELECT whose HAVING / ORDER BY / LIMIT the backend runs on
   those values alone.

What it must not touch: sockets, files, clocks, the database, ``random`` or numpy
for noise. The cache and the budget ledger are the proxy's (proxy.dp).
"""
from .plan import DPPlan, Measure, plan_query
from .query import DPRefused

__all__ = ["DPPlan", "DPRefused", "Measure", "plan_query"]
