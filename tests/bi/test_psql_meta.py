"""psql meta-commands through a governed pgveil: they run, and list only what the user may query."""
from __future__ import annotations

import re

import pytest

from .conftest import CLINIC_TABLES


def _names(listing: str) -> set[str]:
    """Second column of psql's aligned table output (``Schema | Name | ...``)."""
    out = set()
    for line in listing.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) >= 2 and cells[0] == "public":
            out.add(cells[1])
    return out


def _ok(result) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_dt_lists_only_what_each_user_may_read(psql):
    assert _names(_ok(psql("root", r"\dt"))) >= {*CLINIC_TABLES, "items", "events"}
    # erin: denied the clinic tables; nothing else is granted to her
    erin = _ok(psql("erin", r"\dt"))
    assert not _names(erin) & {*CLINIC_TABLES, "items"}
    assert "pgveil_keys" not in erin and "pg_temp" not in erin
    # alice without a purpose: claims only (patients is purpose-limited, visits is under DP)
    assert _names(_ok(psql("alice", r"\dt"))) == {"claims"}
    assert _names(_ok(psql("alice", r"\dt", purpose="Research.Marketing"))) == {"claims", "patients"}


def test_d_table_describes_allowed_tables_and_not_hidden_ones(psql):
    out = _ok(psql("alice", r"\d patients", purpose="Research.Marketing"))
    assert 'Table "public.patients"' in out and "patients_pkey" in out and "ssn" in out
    hidden = psql("alice", r"\d patients")
    assert hidden.returncode != 0 and 'Did not find any relation named "patients"' in hidden.stderr
    erin = psql("erin", r"\d claims")
    assert erin.returncode != 0 and "Did not find any relation" in erin.stderr
    assert 'Table "public.patients"' in _ok(psql("root", r"\d patients"))


def test_d_plus_indexes_sequences_and_relations(psql):
    out = _ok(psql("alice", r"\d+ claims"))
    assert "claims_pkey" in out and "account_no" in out
    assert _names(_ok(psql("alice", r"\di"))) == {"claims_pkey"}  # no index of a hidden table
    assert "events_id_seq" not in _ok(psql("alice", r"\ds"))  # owned by events, which alice may not read
    assert "events_id_seq" in _ok(psql("root", r"\ds"))
    assert _names(_ok(psql("erin", r"\d"))) == set()


@pytest.mark.parametrize("user", ["alice", "erin", "root"])
def test_dn_df_and_l(psql, user):
    assert "public" in _ok(psql(user, r"\dn"))
    assert re.search(r"pg_catalog \| lower\s+\| text", _ok(psql(user, r"\df lower")))
    listing = _ok(psql(user, r"\l"))
    assert "pgveil_test" in listing
    # governed users see only the database they are connected to (pgveil reaches no other one)
    assert ("template1" in listing) == (user == "root")


def test_du_lists_no_backend_roles_to_governed_users(psql):
    out = _ok(psql("alice", r"\du"))
    assert "pgveil_service" not in out and "postgres" not in out


def test_dd_is_refused_with_a_clear_message(psql):
    # \dd reads pg_rewrite (rule and view definitions), refused to governed users
    result = psql("alice", r"\dd")
    assert result.returncode != 0 and "pg_rewrite is not allowed through pgveil" in result.stderr
