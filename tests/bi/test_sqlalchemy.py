"""SQLAlchemy reflection (psycopg 3 driver) through a governed pgveil, as Superset and notebooks use it."""
from __future__ import annotations

import psycopg
import pytest

sqlalchemy = pytest.importorskip("sqlalchemy")
from sqlalchemy import MetaData, Table, create_engine, inspect, select  # noqa: E402
from sqlalchemy.exc import NoSuchTableError, ProgrammingError  # noqa: E402

CLAIMS_COLUMNS = ["claim_id", "patient_id", "state", "amount", "account_no", "country", "filed_at"]


@pytest.fixture
def engine(dsn):
    made = []

    def make(user, purpose=None, client_binding=False):
        # client-side binding puts literals into the text: needed for Table(autoload_with=...) (see docs/bi-tools.md)
        args = {"cursor_factory": psycopg.ClientCursor} if client_binding else {}
        e = create_engine(dsn(user, purpose, "+psycopg"), connect_args=args)
        made.append(e)
        return e
    yield make
    for e in made:
        e.dispose()


def test_inspector_lists_and_describes_only_readable_tables(engine):
    insp = inspect(engine("alice"))
    assert insp.get_table_names() == ["claims"]
    assert insp.get_view_names() == []
    assert "public" in insp.get_schema_names()
    assert [c["name"] for c in insp.get_columns("claims")] == CLAIMS_COLUMNS
    assert insp.get_pk_constraint("claims")["constrained_columns"] == ["claim_id"]
    assert insp.get_foreign_keys("claims") == []
    assert insp.get_indexes("claims") == []  # only the primary key's index, which SQLAlchemy leaves out
    assert insp.get_unique_constraints("claims") == []
    assert insp.get_table_comment("claims") == {"text": None}
    assert not insp.has_table("patients")
    assert list(insp.get_multi_columns()) == [(None, "claims")]

    purposed = inspect(engine("alice", "Research.Marketing"))
    assert sorted(purposed.get_table_names()) == ["claims", "patients"]
    assert purposed.has_table("patients")


def test_erin_sees_no_clinic_table(engine):
    insp = inspect(engine("erin"))
    assert insp.get_table_names() == []
    with pytest.raises(NoSuchTableError):
        insp.get_columns("claims")
    meta = MetaData()
    meta.reflect(engine("erin", client_binding=True))
    assert list(meta.tables) == []


def test_autoload_and_query(engine):
    e = engine("alice", client_binding=True)
    claims = Table("claims", MetaData(), autoload_with=e)
    assert list(claims.columns.keys()) == CLAIMS_COLUMNS
    assert [c.name for c in claims.primary_key] == ["claim_id"]
    with e.connect() as conn:
        rows = conn.execute(select(claims.c.claim_id, claims.c.state).order_by(claims.c.claim_id)).all()
    assert rows == [(1, "Missouri"), (4, "Missouri")]  # row filters apply
    meta = MetaData()
    meta.reflect(e)
    assert list(meta.tables) == ["claims"]


def test_autoload_with_server_side_binding_is_refused_clearly(engine):
    # SQLAlchemy reads current_setting(%(param)s): a setting name pgveil cannot see at Parse time
    with pytest.raises(ProgrammingError, match="setting name must be a constant"):
        Table("claims", MetaData(), autoload_with=engine("alice"))
