"""The statement-kind gate and the entry point, :func:`check_statement`.

Allowed for governed users: SELECT/VALUES/TABLE, SHOW, transaction control,
cursors (DECLARE over a SELECT, FETCH, MOVE, CLOSE), PREPARE of a SELECT,
EXECUTE, DEALLOCATE, UNLISTEN, DISCARD PLANS/SEQUENCES, harmless SETs (see
``settings``) and ``COPY (SELECT ...) TO STDOUT`` / ``COPY table TO STDOUT``.
Everything else is refused; see docs/gates.md for each decision.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

import pglast
from pglast import ast
from pglast.enums.parsenodes import DiscardMode, TransactionStmtKind

from .context import GateContext
from .settings import check_set, check_show, check_transaction_options, proxy_setting
from .verdict import SYNTAX, ProxySetting, Refusal, privilege, unsupported
from .walker import QueryWalker, write_refusal

Verdict = Refusal | ProxySetting | None

_TRANSACTION_KINDS = frozenset({
    TransactionStmtKind.TRANS_STMT_BEGIN, TransactionStmtKind.TRANS_STMT_START,
    TransactionStmtKind.TRANS_STMT_COMMIT, TransactionStmtKind.TRANS_STMT_ROLLBACK,
    TransactionStmtKind.TRANS_STMT_SAVEPOINT, TransactionStmtKind.TRANS_STMT_RELEASE,
    TransactionStmtKind.TRANS_STMT_ROLLBACK_TO,
})
_DISCARD_KINDS = frozenset({DiscardMode.DISCARD_PLANS, DiscardMode.DISCARD_SEQUENCES})
_WRITE_KINDS = {ast.InsertStmt: "INSERT", ast.UpdateStmt: "UPDATE", ast.DeleteStmt: "DELETE", ast.MergeStmt: "MERGE"}
_NAMED_REFUSALS = {
    ast.DoStmt: ("code", "DO blocks are not allowed through pgveil (code execution)"),
    ast.CallStmt: ("code", "CALL is not allowed through pgveil (code execution)"),
    ast.LoadStmt: ("code", "LOAD is not allowed through pgveil (code execution)"),
    ast.ExplainStmt: ("explain", "EXPLAIN is not allowed through pgveil: plans show policy predicates and "
                                 "row counts of hidden rows (explain)"),
    ast.ListenStmt: ("notifications", "LISTEN is not allowed through pgveil (notifications)"),
    ast.NotifyStmt: ("notifications", "NOTIFY is not allowed through pgveil (notifications)"),
    ast.LockStmt: ("writes", "LOCK is not allowed through pgveil (writes)"),
    ast.CreateTableAsStmt: ("writes", "CREATE TABLE AS / CREATE MATERIALIZED VIEW is not allowed through "
                                      "pgveil (writes)"),
}


def check_statement(stmt: ast.Node, ctx: GateContext) -> Verdict:
    """Gate one parsed statement (``RawStmt`` or its ``.stmt``) for the session ``ctx``."""
    if isinstance(stmt, ast.RawStmt):
        stmt = stmt.stmt
    marker = proxy_setting(stmt)
    if marker is not None:
        return marker
    if not ctx.governed:
        return None
    handler = _HANDLERS.get(type(stmt))
    if handler is not None:
        return handler(stmt, ctx)
    if type(stmt) in _WRITE_KINDS:
        return write_refusal(_WRITE_KINDS[type(stmt)])
    if type(stmt) in _NAMED_REFUSALS:
        rule, message = _NAMED_REFUSALS[type(stmt)]
        return privilege(rule, message)
    if type(stmt).__name__.endswith("Stmt"):
        kind = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", type(stmt).__name__.removesuffix("Stmt")).upper()
        return privilege("ddl", f"{kind} statements are not allowed through pgveil (DDL and administration)")
    return unsupported("syntax", f"{type(stmt).__name__} is not supported by pgveil (syntax)")


def check_all(stmts: Iterable[ast.Node], ctx: GateContext) -> tuple[Verdict, ...]:
    """One verdict per statement of a (multi-statement) string.

    A ``SET pgveil.*`` travelling with other statements is refused: the proxy
    answers it itself and cannot split a simple-query string.
    """
    stmts = tuple(stmts)
    verdicts = tuple(check_statement(s, ctx) for s in stmts)
    if len(stmts) > 1 and any(isinstance(v, ProxySetting) for v in verdicts):
        refusal = unsupported("settings", "SET/SHOW pgveil.* must be sent as a statement of its own (settings)")
        return tuple(refusal if isinstance(v, ProxySetting) else v for v in verdicts)
    return verdicts


def check_sql(sql: str, ctx: GateContext) -> tuple[Verdict, ...]:
    """Parse ``sql`` with PostgreSQL's parser and gate every statement; a parse error is refused."""
    try:
        stmts = pglast.parse_sql(sql)
    except pglast.parser.ParseError:
        return (Refusal(SYNTAX, "the statement could not be parsed (syntax)", "syntax"),)
    return check_all(stmts, ctx)


def first_refusal(verdicts: Iterable[Verdict]) -> Refusal | None:
    return next((v for v in verdicts if isinstance(v, Refusal)), None)


def _query(stmt, ctx: GateContext) -> Refusal | None:
    return QueryWalker(ctx).run(stmt)


def _transaction(stmt: ast.TransactionStmt, ctx: GateContext) -> Refusal | None:
    if stmt.kind not in _TRANSACTION_KINDS:
        return privilege("transactions", "two-phase commit is not allowed through pgveil (transactions)")
    return check_transaction_options(stmt.options)


def _inner_query(query, ctx: GateContext, what: str) -> Refusal | None:
    if isinstance(query, ast.SelectStmt):
        return QueryWalker(ctx).run(query)
    if type(query) in _WRITE_KINDS:
        return write_refusal(_WRITE_KINDS[type(query)])
    return privilege("statements", f"{what} may only wrap a SELECT through pgveil (statements)")


def _declare(stmt: ast.DeclareCursorStmt, ctx: GateContext) -> Refusal | None:
    return _inner_query(stmt.query, ctx, "DECLARE CURSOR")


def _prepare(stmt: ast.PrepareStmt, ctx: GateContext) -> Refusal | None:
    return _inner_query(stmt.query, ctx, "PREPARE") or QueryWalker(ctx).run(stmt.argtypes)


def _execute(stmt: ast.ExecuteStmt, ctx: GateContext) -> Refusal | None:
    # The proxy tracks which statements were prepared (and gated) in this session.
    return QueryWalker(ctx).run(stmt.params)


def _discard(stmt: ast.DiscardStmt, ctx: GateContext) -> Refusal | None:
    if stmt.target in _DISCARD_KINDS:
        return None
    return privilege("settings", "DISCARD ALL and DISCARD TEMP are not allowed through pgveil: they would reset "
                                 "the session pgveil pinned (settings)")


def _copy(stmt: ast.CopyStmt, ctx: GateContext) -> Refusal | None:
    if stmt.is_from:
        return write_refusal("COPY FROM")
    if stmt.is_program or stmt.filename is not None:
        return privilege("files", "COPY to a server file or program is not allowed through pgveil; use COPY ... "
                                  "TO STDOUT (files)")
    if stmt.query is not None:
        return _inner_query(stmt.query, ctx, "COPY")
    walker = QueryWalker(ctx)
    if stmt.attlist:
        walker.sensitive.selected_names.update(getattr(a, "sval", "*") for a in stmt.attlist)
    else:
        walker.sensitive.star = True
    return walker.run(stmt.relation)


def _none(stmt, ctx: GateContext) -> None:
    return None


_HANDLERS = {
    ast.SelectStmt: _query,
    ast.VariableShowStmt: lambda s, c: check_show(s),
    ast.VariableSetStmt: check_set,
    ast.TransactionStmt: _transaction,
    ast.DeclareCursorStmt: _declare,
    ast.FetchStmt: _none,
    ast.ClosePortalStmt: _none,
    ast.PrepareStmt: _prepare,
    ast.ExecuteStmt: _execute,
    ast.DeallocateStmt: _none,
    ast.UnlistenStmt: _none,
    ast.DiscardStmt: _discard,
    ast.CopyStmt: _copy,
}
