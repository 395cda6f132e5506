"""The policy model: the example loads unchanged; bad configs give file:line errors naming the policy."""
from __future__ import annotations

import textwrap

import pytest

from proxy.config import Config, load_config, parse_config
from rewrite.policy import ConfigError, load_yaml_with_lines, validate_references
from rewrite.policy.catalog import check_catalog
from rewrite.policy.policies import AccessPolicy, DifferentialPrivacyPolicy, MaskPolicy, RowFilterPolicy
from rewrite.policy.schema import json_schema

HEAD = """\
backend: {dsn: embedded}
users:
  alice: {password_env: PW_A, groups: [analysts], attributes: {office_location: [Ohio]}, purposes: [Research.Marketing]}
purposes: {Research: {Marketing: {}}}
tags: {public.t.c: [PII], public.t: [PHI]}
tables: {public.t: {key: id}}
policies:
"""


def errors_of(policies: str) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_config(HEAD + textwrap.indent(textwrap.dedent(policies), "  "), "cfg.yaml")
    return str(exc.value)


def test_example_loads_unchanged(example_path):
    config = load_config(example_path)
    assert len(config.policies) == 15
    kinds = [type(p) for p in config.policies]
    assert kinds[0] is AccessPolicy and kinds[1] is MaskPolicy and kinds[-1] is DifferentialPrivacyPolicy
    assert RowFilterPolicy in kinds
    assert config.policies[2].priority == "override"


def test_unknown_key_names_line_and_policy():
    msg = errors_of("""\
        - name: p1
          access: {tables: [public.t], allow: {groups: [analysts]}, alow: {users: [alice]}}
    """)
    assert "cfg.yaml:9: policies[0] (p1).access.alow" in msg


def test_duplicate_names_and_unknown_references():
    msg = errors_of("""\
        - name: p1
          access: {tables: [public.t], allow: {users: [alicia]}}
        - name: p1
          mask: {tag: PIIX, type: hash, for: {purposes: [Fraud]}}
    """)
    assert "cfg.yaml:9: policies[0] (p1).access.allow.users: unknown user 'alicia'" in msg
    assert "cfg.yaml:10: policies[1] (p1).name: duplicate policy name" in msg
    assert "unknown tag 'PIIX'" in msg and "unknown purpose 'Fraud'" in msg


def test_where_template_is_parsed_at_load():
    msg = errors_of("""\
        - name: f
          row_filter: {table: public.t, where: "true) UNION SELECT 1 WHERE (true", for: everyone}
    """)
    assert "cfg.yaml:9: policies[0] (f).row_filter.where" in msg and "one boolean expression" in msg
    assert "does not parse" in errors_of("""\
        - name: f
          row_filter: {table: public.t, where: "amount <", for: everyone}
    """)


def test_ordered_items_need_otherwise():
    msg = errors_of("""\
        - name: m
          mask:
            column: public.t.c
            items:
              - when: {groups: [analysts]}
                type: none
    """)
    assert "policies[0] (m).mask" in msg and "otherwise" in msg


def test_mask_parameters_must_fit_type():
    assert "mask type round takes no pattern" in errors_of("""\
        - name: m
          mask: {column: public.t.c, type: round, step: 10, pattern: x, for: everyone}
    """)
    assert "needs value" in errors_of("""\
        - name: m
          mask: {column: public.t.c, type: constant, for: everyone}
    """)


def test_filters_need_table_metadata():
    assert "time_window needs an event-time column" in errors_of("""\
        - name: f
          row_filter: {table: public.t, time_window: 30 days, for: everyone}
    """)


def test_unknown_group_is_a_warning_not_an_error():
    text = HEAD + "  - name: p\n    access: {tables: [public.t], allow: {groups: [analystz]}}\n"
    config = parse_config(text, "cfg.yaml")
    errors, warnings = validate_references(config, load_yaml_with_lines(text, "cfg.yaml"))
    assert errors == []
    assert warnings == ["cfg.yaml:9: policies[0] (p).access.allow.groups: no user is in group 'analystz'"]


def test_catalog_check_mask_against_column_types(example_path):
    config = load_config(example_path)
    catalog = {
        "public.patients": {"patient_id": "integer", "ssn": "text", "email": "text", "zip": "text", "birth_year": "integer"},
        "public.claims": {"claim_id": "integer", "account_no": "text", "state": "text", "amount": "numeric"},
        "public.visits": {"visit_id": "integer", "client_ip": "inet", "cost": "numeric(10,2)", "visited_at": "timestamptz"},
    }
    problems = check_catalog(config, catalog)
    assert problems == ["policies[3] (ip-last-octet): mask type regex cannot apply to public.visits.client_ip of type inet"]
    catalog["public.visits"]["client_ip"] = "text"
    del catalog["public.visits"]["cost"]
    assert check_catalog(config, catalog) == ["policies[4] (coarse-cost): column public.visits.cost does not exist"]


def test_json_schema_of_full_config():
    schema = json_schema(Config)
    assert {"users", "policies", "backend", "listen"} <= set(schema["properties"])
    text = str(schema)
    assert "'for'" in text and "everyone_except" in text and "row_filter" in text
