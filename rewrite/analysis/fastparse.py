"""pglast trees built from libpg_query's JSON: the same trees ``pglast.parse_sql`` gives, about 4x faster.

Parsing is PostgreSQL's own parser either way (``pglast.parser.parse_sql_json``);
what this replaces is pglast's construction of the Python nodes, which validates
and adapts every attribute through ``Node.__setattr__`` and is most of a cold
rewrite's time. Here each class's slots are read once from pglast's own slot
metadata (c types) and values are set directly. Anything this module does not
recognise (an unknown JSON key, type or shape) returns None, and the caller
parses with ``pglast.parse_sql`` instead. Texts with non-ASCII characters always
take that path too, because libpg_query's JSON carries byte offsets where
pglast's trees carry character offsets.

tests/rewrite/test_fastparse.py checks the trees equal pglast's on the test
corpus (every fixture, gate payload and attack) and on generated statements.
"""
from __future__ import annotations

import json
from typing import Any

from pglast import ast, enums
from pglast.parser import parse_sql_json

_BOOL, _INT, _STR, _ENUM, _LIST, _NODE, _STRUCT, _VAL = range(8)
_SET = object.__setattr__
_VAL_KEYS = {"ival": ast.Integer, "fval": ast.Float, "boolval": ast.Boolean, "sval": ast.String, "bsval": ast.BitString}


class _Unknown(Exception):
    pass


_SPECS: dict[type, tuple[dict[str, tuple[int, Any]], tuple[tuple[str, Any], ...]]] = {}


def _spec(cls: type):
    """(slot -> (kind, extra), defaults) for a node class, from pglast's slot c types."""
    spec = _SPECS.get(cls)
    if spec is None:
        kinds: dict[str, tuple[int, Any]] = {}
        defaults = []
        for name, info in cls.__slots__.items():
            ctype = info.c_type
            if ctype == "bool":
                kinds[name], default = (_BOOL, None), False
            elif ctype == "char*":
                kinds[name], default = (_STR, None), None
            elif ctype == "char":  # a C char: pglast keeps the zero byte
                kinds[name], default = (_STR, None), "\x00"
            elif ctype == "List*":
                kinds[name], default = (_LIST, None), None
            elif ctype in ("Node*", "Expr*"):
                kinds[name], default = (_NODE, None), None
            elif ctype == "ValUnion":
                kinds[name], default = (_VAL, None), None
            elif ctype.endswith("*"):
                target = getattr(ast, ctype[:-1], None)
                if target is None:
                    raise _Unknown(ctype)
                kinds[name], default = (_STRUCT, target), None
            elif hasattr(enums, ctype):
                enum = getattr(enums, ctype)
                try:
                    default = enum(0)
                except ValueError:  # a char-valued enum: what pglast makes of a zero byte is not known here
                    raise _Unknown(ctype) from None
                kinds[name] = (_ENUM, enum)
            else:
                kinds[name], default = (_INT, None), 0
            defaults.append((name, default))
        spec = _SPECS[cls] = (kinds, tuple(defaults))
    return spec


def _node(j: Any) -> Any:
    """A wrapped node, ``{"Type": {fields}}`` (or ``{"List": {"items": [...]}}``, a tuple)."""
    if not isinstance(j, dict) or len(j) != 1:
        raise _Unknown(j)
    ((name, fields),) = j.items()
    if name == "List":
        return _items(fields.get("items"))
    cls = getattr(ast, name, None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, ast.Node):
        raise _Unknown(name)
    return _fields(cls, fields)


def _items(items: Any) -> tuple | None:
    if not items:
        return None
    if not isinstance(items, list):
        raise _Unknown(items)
    return tuple(None if x == {} else _node(x) for x in items)  # {}: a NULL in a list (RangeFunction)


def _fields(cls: type, fields: Any) -> Any:
    if not isinstance(fields, dict):
        raise _Unknown(fields)
    kinds, defaults = _spec(cls)
    obj = cls.__new__(cls)
    for name, default in defaults:
        _SET(obj, name, default)
    for key, value in fields.items():
        entry = kinds.get(key)
        if entry is None:
            if cls is ast.A_Const and key in _VAL_KEYS:
                _SET(obj, "val", _fields(_VAL_KEYS[key], value))
                continue
            if key == "location":
                continue  # pglast keeps no location for this node type
            raise _Unknown(key)
        kind, extra = entry
        if kind == _BOOL:
            if not isinstance(value, bool):
                raise _Unknown(value)
        elif kind == _INT:
            if not isinstance(value, int) or isinstance(value, bool):
                raise _Unknown(value)
        elif kind == _STR:
            if not isinstance(value, str):
                raise _Unknown(value)
        elif kind == _ENUM:
            value = extra[value] if isinstance(value, str) else extra(value)
        elif kind == _LIST:
            value = _items(value)
        elif kind == _NODE:
            value = _node(value)
        elif kind == _STRUCT:
            value = _fields(extra, value)
        else:
            raise _Unknown(key)  # ValUnion is keyed by its kind (ival, sval...), handled above
        _SET(obj, key, value)
    return obj


def parse_fast(sql: str) -> tuple[ast.RawStmt, ...] | None:
    """The statements of ``sql`` as pglast would build them, or None (then use pglast.parse_sql).

    Raises pglast.parser.ParseError for text that does not parse, as pglast.parse_sql does.
    """
    if not sql.isascii():
        return None
    text = parse_sql_json(sql)  # raises ParseError like pglast.parse_sql
    try:
        data = json.loads(text)
        out = []
        for s in data.get("stmts") or ():
            if set(s) - {"stmt", "stmt_location", "stmt_len"}:
                return None
            raw = _fields(ast.RawStmt, {k: v for k, v in s.items() if k != "stmt"})
            _SET(raw, "stmt", _node(s["stmt"]) if "stmt" in s else None)
            out.append(raw)
        return tuple(out)
    except (_Unknown, KeyError, ValueError, TypeError, RecursionError):
        return None  # RecursionError: a very deep tree; pglast.parse_sql builds those without recursing
