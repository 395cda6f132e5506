"""The node types the engine knows how to reason about.

A statement that reads a governed table may only contain these; anything else
(a node type added by a newer PostgreSQL, DDL, locking clauses...) makes the
statement fail closed, because a relation reference could hide in a place the
walker does not understand.
"""
from __future__ import annotations

KNOWN_NODES = frozenset({
    # statements
    "RawStmt", "SelectStmt", "InsertStmt", "ExplainStmt", "DeclareCursorStmt", "CopyStmt", "PrepareStmt",
    "CreateTableAsStmt", "IntoClause",
    # FROM items
    "RangeVar", "RangeSubselect", "RangeFunction", "RangeTableSample", "JoinExpr", "Alias", "RangeTableFunc",
    "RangeTableFuncCol", "JsonTable", "JsonTableColumn", "JsonTablePathSpec",
    # query structure
    "ResTarget", "WithClause", "CommonTableExpr", "CTESearchClause", "CTECycleClause", "SortBy", "WindowDef",
    "GroupingSet", "DefElem", "MultiAssignRef", "SetToDefault",
    # expressions
    "ColumnRef", "A_Star", "A_Const", "Integer", "Float", "String", "Boolean", "BitString", "A_Expr", "BoolExpr",
    "FuncCall", "TypeCast", "TypeName", "SubLink", "CaseExpr", "CaseWhen", "CoalesceExpr", "MinMaxExpr",
    "NullTest", "BooleanTest", "A_Indirection", "A_Indices", "A_ArrayExpr", "RowExpr", "ParamRef",
    "CollateClause", "SQLValueFunction", "NamedArgExpr", "GroupingFunc", "XmlExpr", "XmlSerialize",
    "JsonValueExpr", "JsonOutput", "JsonFormat", "JsonReturning", "JsonFuncExpr", "JsonArgument",
    "JsonObjectConstructor", "JsonArrayConstructor", "JsonArrayQueryConstructor", "JsonAggConstructor",
    "JsonObjectAgg", "JsonArrayAgg", "JsonKeyValue", "JsonIsPredicate", "JsonParseExpr", "JsonScalarExpr",
    "JsonSerializeExpr", "JsonBehavior",
})


def _child_slots(cls: type) -> tuple[str, ...]:
    slots = getattr(cls, "__slots__", None)
    if not isinstance(slots, dict):
        return tuple(slots or ())
    # Pointers (Node*, List*, RangeVar*...), the value union of A_Const and embedded structs can hold nodes;
    # char*, bool, numbers and enums never do. pglast's own slot metadata says which is which.
    return tuple(name for name, info in slots.items()
                 if (info.c_type.endswith("*") and info.c_type != "char*") or info.c_type in ("ValUnion", "CreateStmt"))


_CHILD_SLOTS: dict[type, tuple[str, ...]] = {}


def child_slots(cls: type) -> tuple[str, ...]:
    """The attributes of a pglast node class that can hold nodes: what a tree walk must visit."""
    slots = _CHILD_SLOTS.get(cls)
    if slots is None:
        slots = _CHILD_SLOTS[cls] = _child_slots(cls)
    return slots
