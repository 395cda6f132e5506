"""Honest listings: catalog relations a governed subject reads do not list what pgveil refuses them.

What it does: every reference of a governed statement to a catalog relation
that lists relations or their parts (pg_class, pg_attribute, pg_index,
pg_constraint, information_schema.tables, columns...) is replaced by a
subquery over the same relation, same columns in the same order, aliased as
the reference was, that leaves out the rows of *hidden* relations:

- the relations pgveil refuses this subject (``Governance.check``: denied,
  purpose-limited without the purpose, under DP, a view over a governed table,
  a partition of one...), computed over the whole catalog once per (subject
  fingerprint, policy version and validity epoch, catalog version) and cached;
- their indexes (pg_index), owned sequences and TOAST tables (pg_depend);
- everything in temporary schemas (pgveil's own ``pgveil_keys`` and other
  sessions' temp objects: governed sessions cannot create temp objects).

pg_catalog relations are filtered by oid (``pg_class.oid``, ``attrelid``,
``indrelid``...) against a constant ``'{...}'::oid[]`` of refused relations,
widened in SQL to their indexes, sequences and TOAST tables; information_schema
views and pg_catalog's pg_tables/pg_indexes/pg_views/pg_matviews by (schema,
name) against the names of those same oids. ``pg_database`` lists only the
current database (clients cannot reach another one through pgveil).

Some catalog relations psql's ``\\d`` reads are refused by the gates as such
(RLS policies and the roles they name, extended statistics objects,
publications); the gates let them through only because this pass serves them
*empty* (``WHERE false``), same shape. pg_class's row estimates (``reltuples``,
``relpages``, ``relallvisible``, ``relallfrozen``) are ``NULL`` in the
substitute (the gates already refuse naming them: defence in depth).

A listed relation anywhere but a FROM item or ``COPY rel TO`` (or under
TABLESAMPLE) is refused (``0A000``): pgveil cannot filter it there.

What it is not: a secrecy boundary for metadata. Names of refused tables are in
pgveil's own error messages (as in PostgreSQL's), ``'t'::regclass`` and
``to_regclass`` resolve them, and the filters are not fenced (a catalog query
keeps its index scans). Listings are honest so that tools show what a user can
query; row data stays behind the policy views.

Replacement text is built as a tree from fixed templates (the oid array goes in
as a constant node), printed and re-parsed once per cache key and relation,
and reaches statements only as a splice at a placeholder node
(``analysis.print_spliced``), like policy views.
"""
from __future__ import annotations

from functools import lru_cache
from types import SimpleNamespace
from typing import Any, Callable

import pglast
from pglast import ast

from rewrite.analysis import Analysis, print_node, reparse_check
from rewrite.catalog import Catalog, Relation

from . import build as b
from .columns import check_columns
from .governed import Governance, Refusal

# Hidden pg_class oids: the refused relations ($1), anything in a temporary schema, indexes of refused
# relations, and relations that depend on them (owned sequences, TOAST tables).
_HC = ("SELECT hc.oid FROM pg_catalog.pg_class hc WHERE hc.oid = ANY ($1) OR hc.relnamespace IN "
       "(SELECT hn.oid FROM pg_catalog.pg_namespace hn WHERE hn.nspname ~ '^pg_(toast_)?temp_') "
       "UNION ALL SELECT hi.indexrelid FROM pg_catalog.pg_index hi WHERE hi.indrelid = ANY ($1) "
       "UNION ALL SELECT hd.objid FROM pg_catalog.pg_depend hd "
       "WHERE hd.classid = 'pg_catalog.pg_class'::pg_catalog.regclass "
       "AND hd.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND hd.refobjid = ANY ($1)")
# Their (schema, name) pairs, for views that show names, not oids.
_HN = ("SELECT hn2.nspname::pg_catalog.text, hc2.relname::pg_catalog.text FROM pg_catalog.pg_class hc2 "
       f"JOIN pg_catalog.pg_namespace hn2 ON hn2.oid = hc2.relnamespace WHERE hc2.oid IN ({_HC})")
# Constraints on or referencing hidden relations, by (schema, name), for views keyed by constraint name.
_HK = ("SELECT hn3.nspname::pg_catalog.text, hk.conname::pg_catalog.text FROM pg_catalog.pg_constraint hk "
       f"JOIN pg_catalog.pg_namespace hn3 ON hn3.oid = hk.connamespace WHERE hk.conrelid IN ({_HC}) "
       f"OR hk.confrelid IN ({_HC})")


def _oids(*cols: str) -> Callable[[str], str]:
    return lambda rel: " AND ".join(f"{rel}.{c} NOT IN ({_HC})" for c in cols)


def _names(*pairs: tuple[str, str]) -> Callable[[str], str]:
    return lambda rel: " AND ".join(
        f"({rel}.{s}::pg_catalog.text, {rel}.{n}::pg_catalog.text) NOT IN ({_HN})" for s, n in pairs)


def _constraints(rel: str) -> str:
    return f"({rel}.constraint_schema::pg_catalog.text, {rel}.constraint_name::pg_catalog.text) NOT IN ({_HK})"


_PG_CLASS = "'pg_catalog.pg_class'::pg_catalog.regclass"
_TEMP = "^pg_(toast_)?temp_"
_TABLE = ("table_schema", "table_name")

#: (schema, relation) -> the WHERE clause of its substitute, as a function of the relation's name.
FILTERED: dict[tuple[str, str], Callable[[str], str]] = {
    ("pg_catalog", "pg_class"): _oids("oid"),
    ("pg_catalog", "pg_attribute"): _oids("attrelid"),
    ("pg_catalog", "pg_index"): _oids("indrelid", "indexrelid"),
    ("pg_catalog", "pg_constraint"): _oids("conrelid", "confrelid"),
    ("pg_catalog", "pg_attrdef"): _oids("adrelid"),
    ("pg_catalog", "pg_trigger"): _oids("tgrelid"),
    ("pg_catalog", "pg_inherits"): _oids("inhrelid", "inhparent"),
    ("pg_catalog", "pg_partitioned_table"): _oids("partrelid"),
    ("pg_catalog", "pg_sequence"): _oids("seqrelid"),
    ("pg_catalog", "pg_description"):
        lambda r: f"NOT ({r}.classoid = {_PG_CLASS} AND {r}.objoid IN ({_HC}))",
    ("pg_catalog", "pg_depend"):
        lambda r: f"NOT ({r}.classid = {_PG_CLASS} AND {r}.objid IN ({_HC})) "
                  f"AND NOT ({r}.refclassid = {_PG_CLASS} AND {r}.refobjid IN ({_HC}))",
    ("pg_catalog", "pg_type"):
        lambda r: f"{r}.typrelid NOT IN ({_HC}) AND {r}.oid NOT IN "
                  f"(SELECT ht.typarray FROM pg_catalog.pg_type ht WHERE ht.typrelid IN ({_HC}))",
    ("pg_catalog", "pg_database"): lambda r: f"{r}.datname = pg_catalog.current_database()",
    ("pg_catalog", "pg_namespace"): lambda r: f"{r}.nspname !~ '{_TEMP}'",
    ("pg_catalog", "pg_settings"): lambda r: f"pg_catalog.strpos({r}.name, '.') = 0",
    ("pg_catalog", "pg_stat_user_tables"): _oids("relid"),
    ("pg_catalog", "pg_tables"): _names(("schemaname", "tablename")),
    ("pg_catalog", "pg_indexes"): _names(("schemaname", "tablename"), ("schemaname", "indexname")),
    ("pg_catalog", "pg_views"): _names(("schemaname", "viewname")),
    ("pg_catalog", "pg_matviews"): _names(("schemaname", "matviewname")),
    **{("information_schema", v): _names(_TABLE) for v in (
        "tables", "columns", "views", "key_column_usage", "table_constraints", "constraint_column_usage",
        "constraint_table_usage", "table_privileges", "column_privileges", "column_udt_usage",
        "column_domain_usage", "column_column_usage", "routine_table_usage", "routine_column_usage",
        "view_routine_usage")},
    ("information_schema", "schemata"): lambda r: f"{r}.schema_name::pg_catalog.text !~ '{_TEMP}'",
    ("information_schema", "view_table_usage"): _names(("view_schema", "view_name"), _TABLE),
    ("information_schema", "view_column_usage"): _names(("view_schema", "view_name"), _TABLE),
    ("information_schema", "triggers"): _names(("event_object_schema", "event_object_table")),
    ("information_schema", "triggered_update_columns"): _names(("event_object_schema", "event_object_table")),
    ("information_schema", "sequences"): _names(("sequence_schema", "sequence_name")),
    ("information_schema", "element_types"): _names(("object_schema", "object_name")),
    ("information_schema", "referential_constraints"): _constraints,
    ("information_schema", "check_constraints"): _constraints,
}

#: Catalog relations the gates refuse as such but let through because they are served empty here:
#: psql's \d reads RLS policies (and the roles they name), extended statistics objects and publications.
EMPTIED: frozenset[tuple[str, str]] = frozenset(("pg_catalog", n) for n in (
    "pg_policy", "pg_roles", "pg_statistic_ext", "pg_publication", "pg_publication_namespace", "pg_publication_rel"))

#: Columns served as NULL: row estimates count hidden rows (the gates accept naming them only because they
#: are NULL here); where a setting comes from is the server's business.
NULLED: dict[tuple[str, str], frozenset[str]] = {
    ("pg_catalog", "pg_class"): frozenset({"reltuples", "relpages", "relallvisible", "relallfrozen"}),
    ("pg_catalog", "pg_settings"): frozenset({"sourcefile", "sourceline"}),
}
#: Relations served with only these columns; every other one is NULL (activity counters count hidden rows).
KEPT_ONLY: dict[tuple[str, str], frozenset[str]] = {
    ("pg_catalog", "pg_stat_user_tables"): frozenset({"relid", "schemaname", "relname"}),
}

#: What the gates are told this pass substitutes (``GateContext.served``): the empty relations,
#: pg_settings (built-in settings only: no custom, dotted names, as SHOW), pg_class (NULL estimates),
#: pg_stat_user_tables (names only, counters NULL).
SERVED: frozenset[tuple[str, str]] = EMPTIED | {("pg_catalog", "pg_settings"), ("pg_catalog", "pg_class"),
                                                ("pg_catalog", "pg_stat_user_tables")}

_MAX_ENTRIES = 256
_hidden_cache: dict[tuple, tuple[int, ...]] = {}
_text_cache: dict[tuple, str] = {}


def _dp_only(gov: Governance, rel) -> bool:
    # Readable only through DP aggregates: not listed, as BI tools' row-level sampling would be refused anyway.
    d = gov.decision(rel)
    return d.allowed and d.dp is not None


def hidden_oids(catalog: Catalog, gov: Governance, key: tuple) -> tuple[int, ...]:
    """Oids of the catalog's non-system relations pgveil refuses this subject (cached per ``key``)."""
    full = (catalog.version, *key)
    hit = _hidden_cache.get(full)
    if hit is None:
        hit = tuple(sorted(rel.oid for rel in catalog.relations.values()
                           if not rel.is_system and (gov.check(rel, True)[1] is not None or _dp_only(gov, rel))))
        if len(_hidden_cache) >= _MAX_ENTRIES:
            _hidden_cache.clear()
            _text_cache.clear()
        _hidden_cache[full] = hit
    return hit


@lru_cache(maxsize=128)
def _template(schema: str, name: str) -> str:
    where = "false" if (schema, name) in EMPTIED else FILTERED[(schema, name)](name)
    return f"SELECT * FROM {schema}.{name} WHERE {where}"


def _bind(node: Any, value: ast.Node) -> Any:
    """``node`` with every ``$1`` under it replaced by ``value`` (one shared node: it is only printed)."""
    if isinstance(node, tuple):
        return tuple(_bind(x, value) for x in node)
    if isinstance(node, ast.ParamRef):
        return value
    if isinstance(node, ast.Node):
        for attr in node:
            child = getattr(node, attr)
            if isinstance(child, (tuple, ast.Node)):
                setattr(node, attr, _bind(child, value))
    return node


def substitute_text(rel: Relation, hidden: tuple[int, ...], key: tuple) -> str:
    """The printed substitute of catalog relation ``rel`` (cached per catalog version, key and relation)."""
    full = (key, rel.schema, rel.name, rel.columns)
    hit = _text_cache.get(full)
    if hit is not None:
        return hit
    query = pglast.parse_sql(_template(rel.schema, rel.name))[0].stmt
    nulled = NULLED.get(rel.key, frozenset())
    if rel.key in KEPT_ONLY:
        if not rel.columns:  # never serve it with its counters (the caller denies on this error)
            raise ValueError(f"columns of {rel.schema}.{rel.name} are not known")
        nulled = frozenset(c.name for c in rel.columns) - KEPT_ONLY[rel.key]
    if rel.columns:  # same columns, same order; row estimates as NULL
        query.targetList = tuple(
            b.target(b.cast(b.const(None), c.type), c.name) if c.name in nulled else b.target(b.col(rel.name, c.name))
            for c in rel.columns)
    query = _bind(query, b.cast(b.const("{" + ",".join(str(int(o)) for o in hidden) + "}"), "pg_catalog.oid[]"))
    text = print_node(query)
    reparse_check(text)
    _text_cache[full] = text
    return text


_NO_DENIED_COLUMNS = SimpleNamespace(denied_columns=())


def hide_listings(stmt: ast.Node, analysis: Analysis, catalog: Catalog, gov: Governance, key: tuple,
                  splices: dict[int, tuple[ast.Node, str]]) -> Refusal | None:
    """Replace listed catalog references of ``stmt`` in place; their texts go into ``splices``. A refusal, or None.

    ``pg_catalog.pg_class.relname`` (SQLAlchemy writes these) names an unaliased relation entry, which the
    substitute no longer is: columns.py rewrites it to ``pg_class.relname`` where that is provably the same.
    """
    refs = [r for r in analysis.refs if r.relation is not None
            and (r.relation.key in FILTERED or r.relation.key in EMPTIED)]
    if not refs:
        return None
    refusal = check_columns(stmt, catalog, analysis.refs, {id(r.rangevar): _NO_DENIED_COLUMNS for r in refs})
    if refusal is not None:
        return refusal
    hidden = hidden_oids(catalog, gov, key)
    for ref in refs:
        rel, rv = ref.relation, ref.rangevar
        if ref.role not in ("read", "copy") or ref.sample is not None \
                or (ref.role == "copy" and getattr(ref.parent, "is_from", False)):
            return Refusal("0A000", f"pgveil filters {rel.schema}.{rel.name} for governed users and cannot do so "
                           "in this position (use it as a plain FROM item)")
        placeholder = ast.SelectStmt()
        ref.substitute = substitute_text(rel, hidden, (catalog.version, *key))
        splices[id(placeholder)] = (placeholder, ref.substitute)
        alias = ast.Alias(aliasname=rv.alias.aliasname if rv.alias else rv.relname,
                          colnames=rv.alias.colnames if rv.alias else None)
        sub = ast.RangeSubselect(lateral=False, subquery=placeholder, alias=alias)
        if ref.role == "copy":
            copy = ref.parent
            cols = [b.target(b.col(n.sval)) for n in copy.attlist] if copy.attlist \
                else [b.target(ast.ColumnRef(fields=(ast.A_Star(),)))]
            copy.query, copy.relation, copy.attlist = b.select(cols, [sub]), None, None
        else:
            b.replace_child(ref.parent, ref.attr, ref.index, sub)
    return None


def clear() -> None:
    _hidden_cache.clear()
    _text_cache.clear()
