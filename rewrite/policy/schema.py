"""The JSON Schema of a config, for editors (`pgveil schema`).

Takes the model class so the proxy can export its full ``Config`` (server
sections plus the policy model) while this package stays free of ``proxy``.
"""
from __future__ import annotations

from typing import Any

from .model import PolicyConfig


def json_schema(model: type = PolicyConfig) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of ``model``, keys as written in YAML (aliases)."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    schema.setdefault("$schema", "https://json-schema.org/draft/2020-12/schema")
    schema.setdefault("title", "pgveil config")
    return schema
