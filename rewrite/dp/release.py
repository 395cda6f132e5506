"""From exact measurements to released ones: noise every value, then choose the groups shown.

The released form is what the answer cache stores and every later identical
query reuses: ``[[group key texts...], [noisy measurement integers...]]`` per
shown group, JSON-ready. Groups: the declared public keys when every GROUP BY
column has them (missing ones measured as exact zeros, others dropped); else
the groups found, kept only when the threshold measurement's noisy value
reaches ``plan.threshold``. A query without GROUP BY always has its one group.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any, Iterable, Sequence

from .mechanism import add_noise
from .plan import DPPlan

Released = list  # [[keys], [noisy ints]] per group


def _as_int(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, Decimal):
        return int(value.to_integral_value())
    return int(value)


def release(plan: DPPlan, rows: Iterable[Sequence[Any]]) -> Released:
    """Noisy measurements for the exact ``rows`` (group key texts, then one value per measure)."""
    ngroups = len(plan.query.group_columns)
    exact: dict[tuple, list[int]] = {}
    for row in rows:
        exact[tuple(row[:ngroups])] = [_as_int(v) for v in row[ngroups:ngroups + len(plan.measures)]]
    zeros = [0] * len(plan.measures)
    if plan.public_groups is not None:
        keys = list(plan.public_groups)
    elif ngroups == 0:
        keys = [()]
    else:
        keys = sorted(exact, key=lambda k: tuple((v is None, v or "") for v in k))
    columns = []
    for i, m in enumerate(plan.measures):
        columns.append(add_noise([exact.get(k, zeros)[i] for k in keys], m.sensitivity, m.epsilon))
    out: Released = []
    for j, k in enumerate(keys):
        noisy = [col[j] for col in columns]
        if plan.threshold is not None and noisy[plan.threshold_measure] < plan.threshold:
            continue
        out.append([list(k), noisy])
    return out
