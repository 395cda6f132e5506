"""WHERE clauses of DP queries must be unable to raise an error on any row.

Noise protects the aggregate, not the side channel: a predicate such as
``1/(income - 52000) > 0`` fails exactly when a row with income 52000 exists,
and that error would reach the analyst without any noise. So every predicate
must be proved error-free on every row, with the leakproof proof the fence uses
(comparisons, IN, BETWEEN, IS NULL, AND/OR/NOT over columns and literals, with
operators the catalog marks leakproof) plus LIKE / ILIKE with a literal pattern.
"""
from __future__ import annotations

from typing import Any

from pglast import ast
from pglast.enums import BoolExprType

from rewrite.catalog import Catalog, Relation
from rewrite.engine.fence import predicate_proved

_HELP = ("on a differentially private table WHERE may only compare columns with literals or other columns "
         "(=, <>, <, <=, >, >=, IN, BETWEEN, LIKE, IS NULL, AND, OR, NOT): an expression that can fail on some "
         "row would reveal that row")


def where_is_error_free(where: Any, rel: Relation, alias: str, catalog: Catalog) -> None:
    """Raise DPRefused naming the first conjunct not proved error-free."""
    from .query import DPRefused

    parts = where.args if isinstance(where, ast.BoolExpr) and where.boolop == BoolExprType.AND_EXPR else (where,)
    for part in parts:
        if not predicate_proved(part, catalog, rel, alias, allow_like=True):
            from rewrite.analysis.parse import print_node

            raise DPRefused(f"predicate {print_node(part)} is not allowed: {_HELP}")
