"""The policy model: users, purposes, tags, table metadata and policies.

What it does: defines the pydantic models of the policy part of a pgveil config
(``extra="forbid"``, every field documented), loads YAML with line numbers so
validation errors point at the right line, checks cross-references and (given a
catalog) mask types against column types, imports Ranger policy JSON into the
same model, and exports a JSON Schema.

What it must not touch: SQL generation, sockets, files, the database, ``proxy``.
"""
from .model import PolicyConfig, Project, Strict, TableMeta, User
from .yamlsource import ConfigError, format_validation_error, load_yaml_with_lines, validate_references

__all__ = [
    "PolicyConfig", "Project", "Strict", "TableMeta", "User",
    "ConfigError", "load_yaml_with_lines", "format_validation_error", "validate_references",
]
