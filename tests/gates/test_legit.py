"""Legitimate BI and analyst statements pass the gates, and unrestricted users skip them."""
from __future__ import annotations

import pytest

from rewrite.gates import GateContext

from .helpers import refusal_of
from .legit_queries import LEGIT
from .payloads_functions import PAYLOADS as FUNCTION_PAYLOADS
from .payloads_statements import PAYLOADS as STATEMENT_PAYLOADS


def test_legit_table_is_large_and_unique():
    assert len(LEGIT) >= 60
    assert len({name for name, _ in LEGIT}) == len(LEGIT)


@pytest.mark.parametrize("sql", [s for _, s in LEGIT], ids=[n for n, _ in LEGIT])
def test_legit_query_passes(sql):
    assert refusal_of(sql) is None


UNRESTRICTED = GateContext(governed=False)


@pytest.mark.parametrize(
    "sql", [s for _, s, code in FUNCTION_PAYLOADS + STATEMENT_PAYLOADS if code not in ("42601", "0A000")][:40]
)
def test_unrestricted_users_skip_gates(sql):
    assert refusal_of(sql, UNRESTRICTED) is None
