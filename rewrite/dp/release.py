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
from .plan import DPPlan, bound_units, center_units, centered_sensitivity

Released = list  # [[keys], [noisy ints]] per group


def _as_int(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, Decimal):
        return int(value.to_integral_value())
    return int(value)


def release(plan: DPPlan, rows: Iterable[Sequence[Any]]) -> Released:
    """Noisy measurements for the exact ``rows`` (group key texts, then one value per database measure)."""
    ngroups = len(plan.query.group_columns)
    from_db = [i for i, m in enumerate(plan.measures) if m.from_database]
    exact: dict[tuple, list[int]] = {}
    for row in rows:
        values = [0] * len(plan.measures)
        for i, v in zip(from_db, row[ngroups:]):
            values[i] = _as_int(v)
        exact[tuple(row[:ngroups])] = values
    zeros = [0] * len(plan.measures)
    if plan.public_groups is not None:
        keys = list(plan.public_groups)
    elif ngroups == 0:
        keys = [()]
    else:
        keys = sorted(exact, key=lambda k: tuple((v is None, v or "") for v in k))
    noisy = [[0] * len(plan.measures) for _ in keys]
    for i in from_db:
        m = plan.measures[i]
        for j, v in enumerate(add_noise([exact.get(k, zeros)[i] for k in keys], m.sensitivity, m.epsilon)):
            noisy[j][i] = v
    for o in plan.outputs:  # centered sums: their center and sensitivity come from the released rough mean
        if o.rough is None:
            continue
        m = plan.measures[o.value]
        lo, hi = bound_units(m, o.bounds)
        for j, k in enumerate(keys):
            e = exact.get(k, zeros)
            center = center_units(noisy[j][o.rough], noisy[j][o.count], lo, hi)
            sens = centered_sensitivity(m, plan.people, center, lo, hi)
            noisy[j][o.value] = add_noise([e[o.rough] - center * e[o.count]], sens, m.epsilon)[0]
    out: Released = []
    for j, k in enumerate(keys):
        if plan.threshold is not None and noisy[j][plan.threshold_measure] < plan.threshold:
            continue
        out.append([list(k), noisy[j]])
    return out
