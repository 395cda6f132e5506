"""Column masks as expression trees over the raw column.

Each builder takes the raw value expression and returns the masked one; the
view names the result after the column, so names, order and count stay.
Unsupported types raise Unsupported (the façade denies: fail closed).
"""
from __future__ import annotations

from pglast import ast

from rewrite.catalog import Column
from rewrite.decide import ColumnMask

from . import build as b
from .keys import hmac_hex
from rewrite.decide import Subject

from .templates import bind_column, parse_template, subject_template

_TIME_BASES = {"date", "timestamp", "timestamptz"}


class Unsupported(Exception):
    """A policy the engine cannot apply yet: the statement is refused, never run unmasked."""


def _class_mask(expr: ast.Node) -> ast.Node:
    # Ranger's MASK: upper case to X, lower case to x, digits to n.
    for pattern, repl in (("[A-Z]", "X"), ("[a-z]", "x"), ("[0-9]", "n")):
        expr = b.func("regexp_replace", expr, b.const(pattern), b.const(repl), b.const("g"))
    return expr


def _partial(v: ast.Node, m: ColumnMask) -> ast.Node:
    first = int(m.param("show_first") or 0)
    last = int(m.param("show_last") or 0)
    fill = m.param("fill") or "*"
    text = b.cast(v, "text")
    length = b.func("length", text)
    if fill == "class":
        middle = _class_mask(b.func("substr", text, b.const(first + 1), b.op("-", length, b.const(first + last))))
        hidden = _class_mask(text)
    else:
        middle = b.func("repeat", b.const(fill), b.op("-", length, b.const(first + last)))
        hidden = b.func("repeat", b.const(fill), length)
    shown = b.op("||", b.op("||", b.func("left", text, b.const(first)), middle), b.func("right", text, b.const(last)))
    # Values no longer than what would be shown are hidden entirely: showing them would show all.
    return b.case(b.op(">", length, b.const(first + last)), shown, hidden)


def _round(v: ast.Node, m: ColumnMask, column: Column) -> ast.Node:
    unit = m.param("unit")
    if unit:
        if column.base not in _TIME_BASES:
            raise Unsupported(f"round to {unit} needs a date or timestamp column, {column.name} is {column.type}")
        return b.cast(b.func("date_trunc", b.const(unit), v), column.type)
    step = m.param("step")
    num = b.cast(v, "numeric")
    rounded = b.op("*", b.func("round", b.op("/", num, b.const(step))), b.const(step))
    return b.cast(rounded, column.type) if column.base in {"int2", "int4", "int8", "numeric"} else rounded


def mask_expr(v: ast.Node, column: Column, m: ColumnMask, table_oid: int, qualifier: str,
              columns: frozenset[str], subject: Subject) -> ast.Node | None:
    """The masked value of ``v`` (the raw column), or None when the column stays as it is."""
    t = m.type
    if t == "none":
        return None
    if t == "null":
        out: ast.Node = b.cast(b.const(None), column.type)
    elif t == "constant":
        out = b.const(m.param("value"))
    elif t == "hash":
        out = hmac_hex(v, table_oid, "mask")
    elif t == "regex":
        args = [b.cast(v, "text"), b.const(m.param("pattern")), b.const(m.param("replacement"))]
        if m.param("flags"):
            args.append(b.const(m.param("flags")))
        out = b.func("regexp_replace", *args)
    elif t == "partial":
        out = _partial(v, m)
    elif t == "redact":
        out = _class_mask(b.cast(v, "text"))
    elif t == "round":
        out = _round(v, m, column)
    elif t == "custom":
        out = bind_column(parse_template(m.param("expr"), placeholder=True), v, qualifier, columns)
    else:
        # format_preserving, reversible (and anything newer): not built yet, so never shown raw.
        raise Unsupported(f"mask type {t} (policy {m.policy}) is not supported by this version of pgveil")
    if m.where:
        cond = subject_template(m.where, subject, qualifier, columns)
        # Mask unless the predicate is known false: a NULL condition masks (fail closed).
        out = b.case(b.is_not_false(cond), out, v)
    return out
