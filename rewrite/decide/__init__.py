"""The policy decision: what a subject may see of one table.

What it does: compiles a validated policy config (pgveil's own or imported from
Ranger) once per policy version into an indexed form, and answers, for a
Subject and a table, a plain immutable TableDecision: allowed or denied (and by
which policy), per-column masks, row filters, minimization, k-anonymity groups,
purpose requirements and DP settings. Evaluation follows Apache Ranger's
policy engine (see docs/policy-decisions.md). Decisions are cached per
(subject fingerprint, table, policy version).

What it must not touch: SQL generation (the rewrite engine consumes these
decisions), sockets, files, the database, clocks other than the ``now`` it is
given, and ``proxy``.
"""
from .engine import PolicySet, decide
from .evaluate import AccessResult, evaluate_access, evaluate_mask, evaluate_row_filter
from .result import ColumnMask, DPSettings, KAnonGroup, Minimization, PurposeRequirement, RowFilter, TableDecision
from .subject import Subject
from .table import ColumnInfo, TableInfo

__all__ = [
    "PolicySet", "decide", "AccessResult", "evaluate_access", "evaluate_mask", "evaluate_row_filter",
    "ColumnMask", "DPSettings", "KAnonGroup", "Minimization", "PurposeRequirement", "RowFilter", "TableDecision",
    "Subject", "ColumnInfo", "TableInfo",
]
