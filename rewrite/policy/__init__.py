"""The policy model: users, purposes, tags, table metadata and policies.

What it does: defines the pydantic models of the policy part of a pgveil config
(``extra="forbid"``, every field documented), loads YAML with line numbers so
validation errors point at the right line, and exports a JSON Schema.

What it must not touch: SQL generation, sockets, the database.
"""
from .model import PolicyConfig, User
from .yamlsource import ConfigError, load_yaml_with_lines, format_validation_error

__all__ = ["PolicyConfig", "User", "ConfigError", "load_yaml_with_lines", "format_validation_error"]
