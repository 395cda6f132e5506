"""Every attack payload is refused with the expected SQLSTATE and a message that echoes no literal."""
from __future__ import annotations

import pytest

from .helpers import literal_values, refusal_of
from .payloads_functions import PAYLOADS as FUNCTION_PAYLOADS
from .payloads_statements import PAYLOADS as STATEMENT_PAYLOADS

ALL = FUNCTION_PAYLOADS + STATEMENT_PAYLOADS


def test_payload_table_is_large_and_unique():
    assert len(ALL) >= 150
    assert len({name for name, _, _ in ALL}) == len(ALL)


@pytest.mark.parametrize(("sql", "sqlstate"), [(s, c) for _, s, c in ALL], ids=[n for n, _, _ in ALL])
def test_payload_is_refused(sql, sqlstate):
    refusal = refusal_of(sql)
    assert refusal is not None, f"not refused: {sql}"
    assert refusal.sqlstate == sqlstate, refusal
    assert "pgveil" in refusal.message or refusal.sqlstate == "42601"
    for value in literal_values(sql):
        assert value not in refusal.message, (value, refusal.message)
