"""SQL fixture pairs: input, subject, expected output, per pass (tests/rewrite/fixtures/*.sql).

Format, one case per block:

    -- case: a short name
    -- user: alice            (optional: search_path: a, b)
    SELECT ...                 the input
    -- expect:
    SELECT ...                 the expected SQL (the input with the engine's edits, rewrite/analysis/splice.py,
                               or as pglast prints it), or "DENY <sqlstate>" / "ALLOW"

Regenerate expectations after a deliberate change with PGVEIL_FIXTURES_UPDATE=1, then review the diff.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from rewrite import Allow, Deny, RewriteContext, rewrite_sql
from rewrite.decide import PolicySet
from rewrite.engine.keys import StaticKeys

from .conftest import load_config, subject
from .fixture_catalog import CATALOG

HERE = Path(__file__).parent / "fixtures"


def _cases():
    for path in sorted(HERE.glob("*.sql")):
        for block in path.read_text().split("-- case: ")[1:]:
            head, _, expect = block.partition("-- expect:\n")
            lines = head.splitlines()
            meta = {"case": lines[0].strip(), "user": "alice", "search_path": "public"}
            body = []
            for line in lines[1:]:
                if line.startswith("-- ") and ":" in line:
                    k, _, v = line[3:].partition(":")
                    meta[k.strip()] = v.strip()
                else:
                    body.append(line)
            yield pytest.param(path, meta, "\n".join(body).strip(), expect.strip(), id=f"{path.stem}:{meta['case']}")


def _render(v) -> str:
    if isinstance(v, Deny):
        return f"DENY {v.sqlstate}"
    if isinstance(v, Allow):
        return "ALLOW"
    return v.sql


@pytest.mark.parametrize("path,meta,sql,expect", list(_cases()))
def test_fixture(path, meta, sql, expect):
    config = load_config()
    ctx = RewriteContext(subject(config, meta["user"]), PolicySet.from_config(config), CATALOG, StaticKeys(b"k"),
                         tuple(s.strip() for s in meta["search_path"].split(",")), config.tags, gate=lambda r, c: None)
    got = _render(rewrite_sql(sql, ctx, use_cache=False))
    if os.environ.get("PGVEIL_FIXTURES_UPDATE"):
        text = path.read_text()
        marker = f"-- case: {meta['case']}\n"
        start = text.index(marker)
        exp_at = text.index("-- expect:\n", start) + len("-- expect:\n")
        nxt = text.find("-- case: ", exp_at)
        end = len(text) if nxt < 0 else nxt
        path.write_text(text[:exp_at] + got + "\n\n" + text[end:])
        return
    assert got == expect
