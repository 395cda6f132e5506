"""Statement shapes: one rewrite for every statement that differs only in its literals.

``pgbench -S`` in simple mode, and most applications that do not use bind
parameters, send the same statement again and again with a new constant each
time (``... WHERE aid = 48213``). The exact-text verdict cache never hits for
those; this module does, at the cost of one C scan of the text.

**Key.** PostgreSQL's own scanner (``pglast.parser.scan``) finds the literal
tokens. Numbers in their plain decimal spelling (ICONST, FCONST) and string
constants (SCONST: '...', E'...', $$...$$, continued over newlines) become
*slots*; the key is the text with each slot replaced by its token kind, plus
everything the exact-text key holds (subject fingerprint, policy version and
validity epoch, catalog version, search_path, tags) and the gates in force.
Everything else stays in the key verbatim: comments, whitespace, ``$n``
parameters, bit strings, and numbers in spellings older servers read
differently (``0x1F``, ``1_000``). Texts with U& strings or identifiers (their
meaning depends on a later UESCAPE literal) or a NUL are never shaped.

**Learning (a miss).** The statement is rewritten as always. It becomes a
template only if all of this holds:

1. it is one SELECT, and no literal sits where a gate reads constants: inside a
   cast to a ``reg*`` type, or among the arguments of a function the gates
   check by argument (``rewrite.gates.LITERAL_SENSITIVE_FUNCTIONS``) or of a
   ``to_reg*`` lookup;
2. a *probe*, the same text with every slot replaced by a different value of
   the same kind, unique and easy to find, is rewritten too, and both verdicts
   are of the same kind (Allow or Rewritten) with equal plans;
3. each probe value occurs exactly once in the probe's output, as a token of
   its own kind; the output with those tokens cut out is the template;
4. the actual output is exactly the template filled with the actual output's
   tokens at those positions, and each of those tokens has the value of the
   corresponding source literal (both read back with PostgreSQL's parser);
5. no slot touches a character that could join a literal put there (a letter,
   digit, '_', '$', '.', a quote, or a newline that continues a string), so
   any literal of the slot's kind stays exactly one token there.

Anything else caches "no template" for the shape (those statements are
rewritten in full each time, as before).

**Reuse (a hit).** The new statement's literal tokens, in their exact source
spelling, go into the slots; the result must split into exactly one statement
with PostgreSQL's parser (``pglast.parser.split(..., with_parser=True)``),
else the statement is rewritten in full.

**The fast key.** ``scan`` builds a Python object per token (~50 µs for a
300-character statement), more than the rest of a hit. Most statements hold
only literals of the plainest spellings, and for those ``_fast_tokens`` finds
the same slots with one regular expression: ``'...'`` strings (``''`` the only
escape) and plain decimal numbers, outside ``"..."`` identifiers and ``--``
comments. It gives up (and ``scan`` does the work) on anything it does not
read exactly like PostgreSQL: a ``/*`` comment, a ``$`` (parameters, dollar
quotes), a backslash, a NUL, ``U&``, a string right after a letter or digit
(``E'..'``, ``B'..'``) or followed by a newline, a quote or a comment (string
continuation), a number touching a letter, digit, '_', '$', '.' or quote.
For ASCII texts the same function runs in C (``_fastkey.c``, ~0.4 µs instead of
~5): it must, and is tested to, give exactly what ``_fast_tokens`` gives, which
stays the reference. A shape is only *learned* from a text whose fast key and slots are exactly the
ones ``scan`` gives, so every template's key text is a ``scan`` key. A hit
through a fast key ``K`` is a text made of K's key segments with, in each slot,
a string matching ``'(?:[^']|'')*'`` or a plain number. The learned text had a
literal token of the slot's kind at that very place, after the same text, so
the lexer starts each slot in the same state, reads the new literal as one
token of the same kind (its end is fixed by its own characters: a closing
quote not followed by a quote or a continuation, or the last digit before a
character that cannot extend a number, and the text after it is the same),
and goes on exactly as before: the token sequence is the learned one but for
the values of the slot literals, which is what the argument below needs. The
same holds in the output, where each slot sits between template segments that
(5) proved cannot join a literal. The hit is then checked by splitting the
*client's* statement with PostgreSQL's parser (it must be one statement, as for
a full rewrite), not the much longer output.

**Why that is the verdict a full rewrite gives.** Equal keys mean equal token
sequences except the values of slot literals, so equal parse trees except the
values of those A_Const nodes. Nothing in the gates or the engine reads the
value of a user's constant except the places excluded in (1) (audited: the
fence proof types a constant by its node class, Integer/Float/String, which
is the token kind in the key; statements other than SELECT, where SET values
and the like are read, are never shaped). So the rewrite copies each slot
through to its output unchanged, which (2)-(4) check on two different values
for every new shape: a literal the engine dropped, duplicated, moved into a
decision or printed differently fails them. A source spelling and the printed
spelling of the same token kind and value parse to the same constant, so the
filled text is the text the full rewrite would have printed, up to the
spelling of its constants.
"""
from __future__ import annotations

import itertools
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

import pglast
from pglast import ast
from pglast.parser import scan, split

#: Token kinds that become slots; the marker stands for them in the key.
_SLOT = {"ICONST": "\0I\0", "FCONST": "\0F\0", "SCONST": "\0S\0"}
#: Spellings every supported server reads the same way (no 0x1F, 0o17, 0b1, 1_000: PostgreSQL 16+).
_PLAIN_NUMBER = {
    "ICONST": re.compile(r"[0-9]+").fullmatch,
    "FCONST": re.compile(r"(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?").fullmatch,
}
#: Tokens whose meaning depends on a later literal (UESCAPE): such texts are never shaped.
_NEVER = frozenset({"USCONST", "UIDENT"})
_MAX_SHAPES = 20_000


@dataclass(frozen=True, slots=True)
class Template:
    kind: type  # Allow or Rewritten
    plan: Any  # the RewritePlan of a Rewritten verdict, None for Allow
    segments: tuple[str, ...]  # output text around the slots (len(order) + 1 pieces)
    order: tuple[int, ...]  # for each slot of the output, the index of the source literal that fills it


_NO_TEMPLATE = object()
_shapes: dict[tuple, Any] = {}


def clear() -> None:
    _shapes.clear()


def _tokens(sql: str) -> tuple[str, list[tuple[str, int, int]]] | None:
    """(key text, slot literals as (kind, start, end+1)) or None if the text is not shaped."""
    if "\0" in sql:
        return None
    try:
        toks = scan(sql)
    except Exception:
        return None
    parts: list[str] = []
    slots: list[tuple[str, int, int]] = []
    pos = 0
    for t in toks:
        name = t.name
        marker = _SLOT.get(name)
        if marker is None:
            if name in _NEVER:
                return None
            continue
        end = t.end + 1
        plain = _PLAIN_NUMBER.get(name)
        if plain is not None and plain(sql, t.start, end) is None:
            continue  # an unusual spelling stays in the key verbatim
        parts.append(sql[pos:t.start])
        parts.append(marker)
        slots.append((name, t.start, end))
        pos = end
    if not slots:
        return None
    parts.append(sql[pos:])
    return "".join(parts), slots


_IDENT_CHAR = "A-Za-z0-9_$\x80-\U0010ffff"
#: Quoted identifiers and -- comments are skipped whole (group 1); strings (2) and numbers (3) are slots, unless
#: the digits continue a name; a lone quote gives up (4). Every alternative starts with one of -"'0-9. (fast search).
_FAST = re.compile(
    r"(?=[-\"'0-9.])"  # lets the search skip everything else at C speed
    r'(?:("(?:[^"]|"")+"|--[^\n\r]*)'
    r"|('(?:[^']|'')*')"
    r"|((?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
    r"|(['\"]))")
#: What may not follow a string slot: a letter or digit, or (after blanks) a newline, quote or comment (continuation).
_BAD_AFTER_STRING = re.compile(r"[ \t\f\v]*(?:[\n\r'\"]|--)|[" + _IDENT_CHAR + "]").match
_DOT_DIGIT = re.compile(r"[0-9]*\.[0-9]").match
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_$")  # and all of \x80-
_JOINS = _NAME_CHARS | frozenset(".'\"")  # before a string, after a number
_INT4_MAX = "2147483647"


def _fast_tokens(sql: str) -> tuple[str, list[tuple[str, int, int]]] | None:
    """What ``_tokens`` gives, for texts with only the plainest literals; None when it cannot tell (module doc)."""
    if "$" in sql or "\\" in sql or "/*" in sql or "\0" in sql or ("&" in sql and ("&'" in sql or '&"' in sql)):
        return None
    parts: list[str] = []
    slots: list[tuple[str, int, int]] = []
    pos = 0
    n = len(sql)
    for m in _FAST.finditer(sql):
        group = m.lastindex
        if group == 1:
            continue
        if group == 4:
            return None
        start, end = m.span()
        prev = sql[start - 1] if start else " "
        if group == 2:
            if prev in _JOINS or prev >= "\x80" or _BAD_AFTER_STRING(sql, end):
                return None
            kind = "SCONST"
        else:
            if prev in _JOINS or prev >= "\x80":
                if prev in ".'\"" or _DOT_DIGIT(sql, start):
                    return None  # a number right after a quote or a dot, or '.5' right after a name
                continue  # digits that continue a name (t1, p2.x, t1e5)
            if end < n and (sql[end] in _JOINS or sql[end] >= "\x80"):
                return None
            digits = sql[start:end].lstrip("0")  # beyond int4 an integer is an FCONST token (and no int() of huge texts)
            kind = "ICONST" if not digits or digits.isdigit() and (
                len(digits) < 10 or (len(digits) == 10 and digits <= _INT4_MAX)) else "FCONST"
        parts.append(sql[pos:start])
        parts.append(_SLOT[kind])
        slots.append((kind, start, end))
        pos = end
    if not slots:
        return None
    parts.append(sql[pos:])
    return "".join(parts), slots


class Filled(list):
    """The verdicts of a statement filled into a template: cheap to make again, so not worth an exact-text cache."""

    __slots__ = ()


_context_ids: dict[tuple, int] = {}
_next_context_id = itertools.count(1)


def context_id(ctx: Any) -> int | None:
    """A number standing for everything but the text and the validity epoch that a verdict depends on.

    The subject's fingerprint, policy and catalog versions, search_path, tags and the gates in
    force: equal tuples get the same number (interned), never reused for another tuple, so
    ``(text, epoch, context_id(ctx))`` is as good a key as the whole tuple and hashes in a few
    steps. Kept on the (immutable) context. None when the gates' context is not hashable.
    """
    cid = ctx.__dict__.get("_pgveil_context_id")
    if cid is None:
        base = (ctx.subject.fingerprint, ctx.policies.version, ctx.catalog.version, ctx.search_path,
                ctx._tags_fp, ctx.gate, ctx.gate_context)
        try:
            cid = _context_ids.get(base)
        except TypeError:
            return None
        if cid is None:
            if len(_context_ids) >= _MAX_SHAPES:
                _context_ids.clear()  # numbers already given stay unique: the counter never goes back
            cid = _context_ids[base] = next(_next_context_id)
        object.__setattr__(ctx, "_pgveil_context_id", cid)
    return cid


def epoch(ctx: Any) -> int:
    """The validity epoch ``ctx.cache_key`` puts in its key."""
    ps = ctx.policies
    if not ps._edges:
        return 0
    return ps.epoch(time.time() if ctx.now is None else ctx.now)


def _key(shape: str, ctx: Any) -> tuple | None:
    cid = context_id(ctx)
    return None if cid is None else (shape, epoch(ctx), cid)


# The same function in C for ASCII texts (rewrite/_fastkey.c; NotImplemented otherwise), when it was built.
_fast_tokens_c = None
if not os.environ.get("PGVEIL_NO_SPEEDUPS"):
    try:
        from ._fastkey import fast_tokens as _fast_tokens_c
    except ImportError:  # no compiler at install time
        pass


def rewrite_statements(sql: str, ctx: Any, full: Callable[[str, Any], list]) -> list:
    """The verdicts of ``sql``: from a template of its shape, or ``full(sql, ctx)`` (learning the shape)."""
    found = NotImplemented if _fast_tokens_c is None else _fast_tokens_c(sql)
    if found is NotImplemented:
        found = _fast_tokens(sql)
    fast = found is not None
    if not fast:
        found = _tokens(sql)
        if found is None:
            return full(sql, ctx)
    shape, slots = found
    key = _key(shape, ctx)
    if key is None:
        return full(sql, ctx)
    entry = _shapes.get(key)
    if entry is None:
        verdicts = full(sql, ctx)
        if len(_shapes) >= _MAX_SHAPES:
            _shapes.clear()
        try:
            # learned only from a text whose key is the one scan() gives (module doc: the fast key)
            same = not fast or _tokens(sql) == found
            _shapes[key] = (same and _learn(sql, slots, verdicts, ctx, full)) or _NO_TEMPLATE
        except Exception:  # learning must never change a verdict
            _shapes[key] = _NO_TEMPLATE
        return verdicts
    if entry is _NO_TEMPLATE:
        return full(sql, ctx)
    verdict = _fill(entry, sql, slots, sql if fast else None)
    return Filled((verdict,)) if verdict is not None else full(sql, ctx)


def fast_shape(sql: str) -> str | None:
    """The C fast key's shape text of ``sql`` (what ``template_of`` looks up), or None where it has none."""
    if _fast_tokens_c is None:
        return None
    found = _fast_tokens_c(sql)
    return None if found is None or found is NotImplemented else found[0]


def template_of(sql: str, ctx: Any) -> tuple[str, Template] | None:
    """(fast key, template) when ``sql`` is filled from a learned template through the C fast key.

    Read-only: what ``rewrite_statements`` would find for ``sql`` under ``ctx`` on the path that
    proxy/_relay.c repeats without Python (the same C key, ``fastkey_core.h``; the same segments;
    the same one-statement check of the client's text). None for anything else.
    """
    if _fast_tokens_c is None:
        return None
    found = _fast_tokens_c(sql)
    if found is None or found is NotImplemented:
        return None
    key = _key(found[0], ctx)
    entry = None if key is None else _shapes.get(key)
    if type(entry) is not Template:
        return None
    return found[0], entry


def _fill(t: Template, sql: str, slots: list[tuple[str, int, int]], check: str | None = None) -> Any:
    """The template filled with ``sql``'s literals; None unless ``check`` (default: the result) is one statement."""
    segs = t.segments
    out = [segs[0]]
    for i, lit in enumerate(t.order):
        _, start, end = slots[lit]
        out.append(sql[start:end])
        out.append(segs[i + 1])
    text = "".join(out)
    try:
        if len(split(text if check is None else check, with_parser=True)) != 1:
            return None
    except Exception:
        return None
    return t.kind(text) if t.plan is None else t.kind(text, t.plan)


# --------------------------------------------------------------------------- learning


def _learn(sql: str, slots: list[tuple[str, int, int]], verdicts: list, ctx: Any, full: Callable) -> Template | None:
    from rewrite.facade import Allow, Rewritten

    if len(verdicts) != 1 or type(verdicts[0]) not in (Allow, Rewritten):
        return None
    actual = verdicts[0]
    stmts = pglast.parse_sql(sql)
    if len(stmts) != 1 or not isinstance(stmts[0].stmt, ast.SelectStmt) or _reads_constants(stmts[0].stmt):
        return None
    values = [_value(sql[s:e]) for _, s, e in slots]
    probes = _probes(slots, values)
    if probes is None:
        return None
    pieces, pos = [], 0
    for (_, s, e), p in zip(slots, probes):
        pieces += [sql[pos:s], p]
        pos = e
    probe_verdicts = full("".join(pieces) + sql[pos:], ctx)
    if len(probe_verdicts) != 1 or type(probe_verdicts[0]) is not type(actual):
        return None
    probe = probe_verdicts[0]
    if isinstance(actual, Rewritten) and probe.plan != actual.plan:
        return None
    return _template(actual, probe, slots, probes, values)


def _template(actual: Any, probe: Any, slots: list, probes: list[str], values: list) -> Template | None:
    ptoks, atoks = scan(probe.sql), scan(actual.sql)
    if len(ptoks) != len(atoks):
        return None
    where = {p: i for i, p in enumerate(probes)}
    positions: list[tuple[int, int]] = []  # (token index in the output, source literal index)
    seen: set[int] = set()
    for j, t in enumerate(ptoks):
        if t.name not in _SLOT:
            continue
        lit = where.get(probe.sql[t.start:t.end + 1])
        if lit is None:
            continue
        if lit in seen or slots[lit][0] != t.name or atoks[j].name != t.name:
            return None
        seen.add(lit)
        positions.append((j, lit))
    if len(seen) != len(probes):
        return None  # a literal the rewrite dropped, or printed in another form
    segments, filled, pos = [], [], 0
    for j, lit in positions:
        pt, at = ptoks[j], atoks[j]
        segments.append(probe.sql[pos:pt.start])
        pos = pt.end + 1
        printed = actual.sql[at.start:at.end + 1]
        if _value(printed) != values[lit]:
            return None  # the rewrite changed the constant
        filled += [segments[-1], printed]
    segments.append(probe.sql[pos:])
    if not all(_separates(segments[i], segments[i + 1]) for i in range(len(positions))):
        return None
    if "".join(filled) + segments[-1] != actual.sql:
        return None  # the outputs differ elsewhere than in the literals
    return Template(type(actual), getattr(actual, "plan", None), tuple(segments), tuple(lit for _, lit in positions))


def _word(ch: str) -> bool:
    return ch.isalnum() or ch in "_$.'\"\\"


_CONTINUES = re.compile(r"\s*\n").match  # '...' <newline> '...' continues a string constant


def _separates(before: str, after: str) -> bool:
    """Any literal of the slot's kind between ``before`` and ``after`` stays one token, the same one.

    A literal token starts with a digit, '.', a quote, E or $ and ends with a digit, '.', a
    quote or $: nothing before or after a slot may be a character that would join it (a
    letter, digit, '_', '$', '.', a quote), nor a newline that would continue a string.
    """
    return not (before and _word(before[-1])) and not (after and (_word(after[0]) or _CONTINUES(after)))


def _value(token: str) -> tuple:
    """A literal token's constant, as PostgreSQL's parser reads it."""
    (stmt,) = pglast.parse_sql("SELECT " + token)
    node = stmt.stmt.targetList[0].val
    if not isinstance(node, ast.A_Const) or node.isnull:
        raise ValueError("not a constant")
    v = node.val
    return type(v).__name__, getattr(v, "ival", None), getattr(v, "fval", None), getattr(v, "sval", None)


def _probes(slots: list[tuple[str, int, int]], values: list[tuple]) -> list[str] | None:
    out = []
    for i, ((kind, _, _), value) in enumerate(zip(slots, values)):
        for attempt in range(3):
            n = 918273645 - 7919 * (i + 97 * attempt)
            p = {"ICONST": str(n), "FCONST": f"{n}.25", "SCONST": f"'pgvprobe{i}q{n}'"}[kind]
            if _value(p) != value:
                break
        else:
            return None
        out.append(p)
    return out


#: Casts whose operand is a name PostgreSQL looks up (``'x'::regclass``): never shaped.
def _is_name_cast(node: ast.TypeCast) -> bool:
    names = [getattr(n, "sval", "") for n in node.typeName.names or ()]
    return bool(names) and names[-1].lower().startswith("reg")


def _reads_constants(stmt: Any) -> bool:
    """True if a literal sits where the gates read constants (the shape's verdict could depend on it)."""
    from rewrite.gates import LITERAL_SENSITIVE_FUNCTIONS

    def has_const(node: Any) -> bool:
        return any(isinstance(n, ast.A_Const) for n in _walk(node))

    for node in _walk(stmt):
        if isinstance(node, ast.TypeCast) and _is_name_cast(node) and has_const(node.arg):
            return True
        if isinstance(node, ast.FuncCall):
            name = getattr(node.funcname[-1], "sval", "") if node.funcname else ""
            name = name.lower()
            if (name in LITERAL_SENSITIVE_FUNCTIONS or name.startswith("to_reg")) and has_const(node.args):
                return True
    return False


def _walk(node: Any):
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, (tuple, list)):
            stack.extend(n)
        elif isinstance(n, ast.Node):
            yield n
            for attr in n.__slots__:
                v = getattr(n, attr, None)
                if isinstance(v, (ast.Node, tuple, list)):
                    stack.append(v)
