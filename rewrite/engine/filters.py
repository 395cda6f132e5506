"""Row filters and minimization as predicate trees over the raw table.

All applicable filters are ANDed. A subject without a match attribute gets a
``false`` filter from the decision (no rows, never all rows).
"""
from __future__ import annotations

from pglast import ast
from pglast.enums import A_Expr_Kind

from rewrite.catalog import Relation
from rewrite.decide import Minimization, RowFilter, Subject

from . import build as b
from .keys import hmac_bytes
from .masks import Unsupported
from .templates import subject_template

_TEXT_BASES = {"text", "varchar", "bpchar", "name", "citext"}


def _column(rel: Relation, name: str | None, policy: str):
    c = rel.column(name) if name else None
    if c is None:
        raise Unsupported(f"policy {policy} names column {name} which {rel.schema}.{rel.name} does not have")
    return c


def filter_expr(f: RowFilter, rel: Relation, subject: Subject, qualifier: str) -> ast.Node:
    if f.kind == "false":
        return b.const(False)
    columns = frozenset(c.name for c in rel.columns)
    if f.kind == "match":
        c = _column(rel, f.param("column"), f.policy)
        ref: ast.Node = b.col(qualifier, c.name)
        if c.base not in _TEXT_BASES:
            ref = b.cast(ref, "text")  # compare as text: never a cast error on an attribute value
        values = tuple(f.param("values") or ())
        if not values:
            return b.const(False)
        return ast.A_Expr(kind=A_Expr_Kind.AEXPR_OP_ANY, name=(b.s("="),), lexpr=ref, rexpr=b.text_array(values))
    if f.kind == "where":
        return subject_template(f.param("expr"), subject, qualifier, columns)
    if f.kind == "time_window":
        c = _column(rel, f.param("column"), f.policy)
        seconds = float(f.param("seconds"))
        amount = str(int(seconds)) if seconds.is_integer() else repr(seconds)
        window = b.cast(b.const(f"{amount} seconds"), "interval")
        return b.op(">=", b.col(qualifier, c.name), b.op("-", b.func("now"), window))
    raise Unsupported(f"row filter kind {f.kind} (policy {f.policy}) is not supported")


#: The sample keeps rows whose keyed 32-bit hash is below percent% of 2**32.
def minimize_expr(m: Minimization, rel: Relation, qualifier: str) -> ast.Node:
    c = _column(rel, m.key_column, m.policy)
    digest = hmac_bytes(b.col(qualifier, c.name), rel.oid, "sample")
    head = b.func("substr", digest, b.const(1), b.const(4))
    # 'x' || hex of the first 4 bytes, read as bit(32), then as a non-negative bigint.
    as_bits = b.cast(b.op("||", b.const("x"), b.func("encode", head, b.const("hex"))), "bit(32)")
    number = b.cast(as_bits, "bigint")
    threshold = int(round(float(m.percent) / 100.0 * 2**32))
    return b.op("<", number, b.const(threshold))
