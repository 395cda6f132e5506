"""The database catalog as pgveil sees it: a plain immutable object.

What it does: holds what the rewrite engine needs to resolve names as
PostgreSQL does and to build policy views: schemas, relations (kind, oid,
columns in order with their types), what views depend on, partition and
inheritance parents, function and operator leakproofness. ``proxy.catalog``
fills it from pg_catalog; tests may build it by hand.

What it must not touch: the database (it is data, loaded elsewhere), policies.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Iterable, Mapping

#: Schemas whose relations are the catalog gates' business, not the data policies'.
SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_toast"})

RELKINDS = {"r": "table", "v": "view", "m": "matview", "p": "partitioned", "f": "foreign"}


@dataclass(frozen=True, slots=True)
class Column:
    """A column: name, ``type`` as format_type prints it (numeric(10,2)), ``base`` the pg_type name (numeric)."""

    name: str
    type: str
    base: str


@dataclass(frozen=True)
class Relation:
    """A relation in the catalog.

    ``depends_on``: (schema, name) of relations a view or matview reads.
    ``parents``: (schema, name) of partition / inheritance parents.
    """

    oid: int
    schema: str
    name: str
    kind: str  # table, view, matview, partitioned, foreign
    columns: tuple[Column, ...]
    depends_on: tuple[tuple[str, str], ...] = ()
    parents: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.schema, self.name)

    @property
    def is_system(self) -> bool:
        return self.schema in SYSTEM_SCHEMAS

    def column(self, name: str) -> Column | None:
        for c in self.columns:
            if c.name == name:
                return c
        return None


@dataclass(frozen=True)
class Catalog:
    """Schemas, relations, leakproof functions and operators of one database at one time.

    ``operators`` maps (name, left base type, right base type) to the leakproofness
    of the operator's function; ``functions`` maps a function name to True when
    every overload of that name is leakproof.
    """

    database: str
    relations: Mapping[tuple[str, str], Relation]
    schemas: frozenset[str] = frozenset()
    functions: Mapping[str, bool] = field(default_factory=dict)
    operators: Mapping[tuple[str, str, str], bool] = field(default_factory=dict)
    version: str = ""

    def __post_init__(self) -> None:
        rels = MappingProxyType(dict(self.relations))
        object.__setattr__(self, "relations", rels)
        object.__setattr__(self, "functions", MappingProxyType(dict(self.functions)))
        object.__setattr__(self, "operators", MappingProxyType(dict(self.operators)))
        schemas = frozenset(self.schemas) | {s for s, _ in rels} | SYSTEM_SCHEMAS
        object.__setattr__(self, "schemas", schemas)
        by_oid = {r.oid: r for r in rels.values()}
        object.__setattr__(self, "_by_oid", by_oid)
        children: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for r in rels.values():
            for p in r.parents:
                children.setdefault(p, []).append(r.key)
        object.__setattr__(self, "_children", {k: tuple(v) for k, v in children.items()})
        if not self.version:
            canon = repr((self.database, sorted((k, r.oid, r.kind, r.columns, r.depends_on, r.parents) for k, r in rels.items()),
                          sorted(self.functions.items()), sorted(self.operators.items())))
            object.__setattr__(self, "version", hashlib.sha256(canon.encode()).hexdigest()[:16])

    @classmethod
    def build(cls, database: str, relations: Iterable[Relation], **kw) -> "Catalog":
        return cls(database, {r.key: r for r in relations}, **kw)

    def get(self, schema: str, name: str) -> Relation | None:
        return self.relations.get((schema, name))

    def by_oid(self, oid: int) -> Relation | None:
        return self._by_oid.get(oid)  # type: ignore[attr-defined]

    def children(self, key: tuple[str, str]) -> tuple[tuple[str, str], ...]:
        """Direct partitions / inheritance children of a relation."""
        return self._children.get(key, ())  # type: ignore[attr-defined]

    def resolve(self, name: str, search_path: Iterable[str]) -> Relation | None:
        """An unqualified relation name looked up as PostgreSQL does.

        pg_catalog is searched first unless the path names it. The session's
        temporary schema (searched before everything else by PostgreSQL) is not
        in the catalog: governed sessions cannot create temp objects (gates),
        and every name the engine prints is schema-qualified, so a temp object
        cannot capture a reference pgveil resolved.
        """
        path = list(search_path)
        if "pg_catalog" not in path:
            path.insert(0, "pg_catalog")
        for schema in path:
            rel = self.relations.get((schema, name))
            if rel is not None:
                return rel
        return None

    def operator_leakproof(self, op: str, left: str, right: str) -> bool:
        return bool(self.operators.get((op, left, right), False))
