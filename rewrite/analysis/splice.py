"""The rewritten statement as the analyst's own text with a few edits, verified against the rewritten tree.

Why: pglast's printer is pure Python and, for a 300-character BI query, costs
more than half of a whole rewrite, although the engine changes only a few
places of the analyst's tree: a governed FROM item becomes a sub-select (the
policy view, already printed and cached as text), every relation name gets its
schema, and unqualified built-in calls get ``pg_catalog.``.

What it does: ``splice`` makes those edits on the source text at the nodes'
token locations (pglast gives each RangeVar and FuncCall the character offset
of its name), once with each policy view written as the placeholder ``SELECT``
(the *skeleton*) and once with the view's text (the *final* SQL).

Why that is safe: the text is never trusted. ``verified`` parses the skeleton
with PostgreSQL's parser (libpg_query, C: ``pglast.parser.parse_sql_json``) and
compares the result, node by node and attribute by attribute (locations
aside), with the rewritten tree the engine built, whose placeholders are empty
``SelectStmt`` nodes, exactly what ``(SELECT)`` parses to. Any difference
(a location that is not where the edit assumed, a comment, an odd spelling, an
edit this module does not know, such as a rewritten three-part column name)
means the caller prints the tree with pglast as before. Each policy view text
was printed from its tree and re-parsed when it was made; it replaces a
parenthesised ``SELECT`` placeholder, and the final SQL is re-parsed as before
(``reparse_check``). The comparison is strict both ways: every attribute of
every node of the tree must be in the parse (or be the C default when it is
absent there), and the parse may have no attribute the tree lacks.

Left to the printer: texts with comments (the output must be safe to join
with other statements or wrap, which a trailing ``--`` comment is not), and
texts with a number or parameter that touches a name character or a dot
(``0x1F``, ``1_000``, ``5abc``, ``$1x``): PostgreSQL versions read those
differently (non-decimal and underscored integers are PostgreSQL 16+, trailing
junk an error only since 15), and the verification parses with one version
(threat 10: the printer writes every constant in a spelling all versions read
alike).
"""
from __future__ import annotations

import json
import re
from typing import Any, Iterable

from pglast import ast, enums
from pglast.parser import parse_sql_json

PLACEHOLDER = "SELECT"

_IDENT = r'(?:[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*|"(?:[^"]|"")+")'
_QNAME = re.compile(_IDENT + r"(?:[ \t\n\r]*\.[ \t\n\r]*" + _IDENT + r"){0,2}").match
_NAME = re.compile(_IDENT).match
_STAR_AFTER = re.compile(r"[ \t\n\r]*\*").match
_PLAIN_IDENT = re.compile(r"[a-z_][a-z0-9_$]*").fullmatch
_NAME_CHARS = r"A-Za-z0-9_$\x80-\U0010ffff"
#: A number or $n (not inside a name) directly followed by a name character or a dot: versions differ.
_VERSION_SENSITIVE = re.compile(
    r"(?<![" + _NAME_CHARS + r"])(?>\$[0-9]+|[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?)"
    r"[" + _NAME_CHARS + r".]").search


def quote_ident(name: str) -> str:
    """``name`` as PostgreSQL reads it back: bare when lower case and not a keyword, else double-quoted."""
    from pglast.keywords import RESERVED_KEYWORDS, TYPE_FUNC_NAME_KEYWORDS, COL_NAME_KEYWORDS, UNRESERVED_KEYWORDS

    if _PLAIN_IDENT(name) and name not in RESERVED_KEYWORDS and name not in TYPE_FUNC_NAME_KEYWORDS \
            and name not in COL_NAME_KEYWORDS and name not in UNRESERVED_KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


class Edit:
    __slots__ = ("start", "end", "text", "view")

    def __init__(self, start: int, end: int, text: str, view: str | None = None) -> None:
        self.start, self.end, self.text, self.view = start, end, text, view


def splice(sql: str, raw: ast.RawStmt, edits: Iterable[Edit]) -> tuple[str, str] | None:
    """(skeleton, final) of the statement ``raw`` of ``sql`` with ``edits``; None when they overlap or stray."""
    start = raw.stmt_location or 0
    end = start + raw.stmt_len if raw.stmt_len else len(sql)
    text = sql[start:end]
    if "--" in text or "/*" in text or _VERSION_SENSITIVE(text):
        return None
    skeleton, final, pos = [], [], start
    for e in sorted(edits, key=lambda e: e.start):
        if e.start < pos or e.end > end:
            return None
        piece = sql[pos:e.start]
        skeleton += [piece, e.text]
        final += [piece, e.text if e.view is None else e.text.replace("(" + PLACEHOLDER + ")", "(" + e.view + ")", 1)]
        pos = e.end
    skeleton.append(sql[pos:end])
    final.append(sql[pos:end])
    return "".join(skeleton).strip(), "".join(final).strip()


def relation_edit(sql: str, rv: ast.RangeVar, view: str | None) -> Edit | None:
    """The qualified name of ``rv`` (already qualified in the tree), or, with ``view``, its sub-select."""
    loc = rv.location
    if loc is None or loc < 0:
        return None
    m = _QNAME(sql, loc)
    if m is None:
        return None
    if view is None:
        return Edit(loc, m.end(), quote_ident(rv.schemaname) + "." + quote_ident(rv.relname))
    if not rv.inh or _STAR_AFTER(sql, m.end()):
        return None  # ONLY t / t *: the keyword is not at the name's location; leave it to the printer
    text = "(" + PLACEHOLDER + ")"
    if rv.alias is None:
        text += " AS " + quote_ident(rv.relname)
    return Edit(loc, m.end(), text, view)


def call_edit(sql: str, call: ast.FuncCall) -> Edit | None:
    """``pg_catalog.`` before a call the engine qualified."""
    loc = call.location
    if loc is None or loc < 0 or _NAME(sql, loc) is None:
        return None
    return Edit(loc, loc, "pg_catalog.")


# --------------------------------------------------------------------------- verification


def verified(skeleton: str, stmt: ast.Node) -> bool:
    """True when ``skeleton`` parses to exactly one statement equal to ``stmt`` (locations aside)."""
    try:
        parsed = json.loads(parse_sql_json(skeleton))
    except Exception:
        return False
    stmts = parsed.get("stmts") or ()
    if len(stmts) != 1 or set(stmts[0]) - {"stmt", "stmt_location", "stmt_len"}:
        return False
    try:
        return _same(stmt, stmts[0].get("stmt"))
    except Exception:
        return False


_BOOL, _INT, _STR, _ENUM, _LIST, _WRAPPED, _STRUCT, _VAL = range(8)
_SPECS: dict[type, tuple] = {}


def _spec(cls: type) -> tuple:
    spec = _SPECS.get(cls)
    if spec is None:
        out = []
        for name, info in cls.__slots__.items():
            if name == "location":
                continue
            ctype = info.c_type
            if ctype == "bool":
                kind, extra = _BOOL, None
            elif ctype in ("char*", "char"):
                kind, extra = _STR, None
            elif ctype == "List*":
                kind, extra = _LIST, None
            elif ctype in ("Node*", "Expr*"):
                kind, extra = _WRAPPED, None
            elif ctype == "ValUnion":
                kind, extra = _VAL, None
            elif ctype.endswith("*"):
                kind, extra = _STRUCT, getattr(ast, ctype[:-1])
            elif hasattr(enums, ctype):
                kind, extra = _ENUM, getattr(enums, ctype)
            else:
                kind, extra = _INT, None
            out.append((name, kind, extra))
        spec = _SPECS[cls] = tuple(out)
    return spec


def _same(node: Any, j: Any) -> bool:
    """``node`` (a pglast Node) against ``j``, libpg_query's JSON of a node: ``{"Type": {fields}}``."""
    if not isinstance(node, ast.Node) or not isinstance(j, dict) or len(j) != 1:
        return False
    ((name, fields),) = j.items()
    if name != type(node).__name__:
        return False
    return _fields(node, fields)


def _fields(node: Any, fields: dict) -> bool:
    used = 1 if "location" in fields else 0
    for attr, kind, extra in _spec(type(node)):
        v = getattr(node, attr)
        jv = fields.get(attr)
        if jv is not None:
            used += 1
        if kind == _BOOL:
            if bool(v) != (jv is True) or (jv is not None and jv is not True):
                return False
        elif kind == _INT:
            if (v or 0) != (jv or 0) or not isinstance(jv or 0, int) or isinstance(jv, bool):
                return False
        elif kind == _STR:
            if v != jv and not (v in (None, "") and jv in (None, "")):
                return False
        elif kind == _ENUM:
            default = extra(0).name
            if (extra(v).name if v is not None else default) != (jv if jv is not None else default):
                return False
        elif kind == _LIST:
            if not _list(v, jv):
                return False
        elif kind == _WRAPPED:
            if v is None or jv is None:
                if v is not None or jv is not None:
                    return False
            elif isinstance(v, tuple):
                if not isinstance(jv, dict) or set(jv) != {"List"} or not _list(v, jv["List"].get("items")):
                    return False
            elif not _same(v, jv):
                return False
        elif kind == _STRUCT:
            if v is None or jv is None:
                if v is not None or jv is not None:
                    return False
            elif type(v) is not extra or not isinstance(jv, dict) or not _fields(v, jv):
                return False
        else:  # _VAL: A_Const's value, keyed by its kind (ival, fval, boolval, sval, bsval)
            if v is None:
                if jv is not None:
                    return False
                continue
            key = {ast.Integer: "ival", ast.Float: "fval", ast.Boolean: "boolval", ast.String: "sval",
                   ast.BitString: "bsval"}.get(type(v))
            jval = fields.get(key) if key else None
            if jval is None or not isinstance(jval, dict) or not _fields(v, jval):
                return False
            used += 1
    return used == len(fields)


def _list(v: Any, jv: Any) -> bool:
    if not v:
        return not jv
    if not isinstance(jv, list) or len(jv) != len(v):
        return False
    for x, jx in zip(v, jv):
        if isinstance(x, tuple):
            if not isinstance(jx, dict) or set(jx) != {"List"} or not _list(x, jx["List"].get("items")):
                return False
        elif not _same(x, jx):
            return False
    return True
