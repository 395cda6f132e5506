"""YAML loading that remembers where every key came from.

pydantic reports errors by location tuple (``("users", "alice", "groupz")``); this
module maps such a tuple back to the line of the YAML file, so an admin gets
``pgveil.yaml:12: users.alice.groupz: Extra inputs are not permitted``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError


class ConfigError(Exception):
    """A config file that cannot be used; the message is meant for the admin."""


@dataclass(frozen=True)
class YamlSource:
    """Parsed YAML data plus a map from key paths to 1-based line numbers."""

    data: Any
    lines: dict[tuple, int]
    name: str

    def line_of(self, loc: tuple) -> int | None:
        """The line of the deepest known prefix of ``loc``."""
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get((), None)


def _walk(node: yaml.Node, path: tuple, lines: dict[tuple, int]) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(f"line {key_node.start_mark.line + 1}: keys must be scalars")
            key = _scalar(key_node)
            if key in out:
                raise ConfigError(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
            lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _walk(value_node, path + (key,), lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_walk(item, path + (i,), lines) for i, item in enumerate(node.value)]
    return _scalar(node)


_LOADER = yaml.SafeLoader("")


def _scalar(node: yaml.Node) -> Any:
    return _LOADER.construct_object(node, deep=True)


def load_yaml_with_lines(text: str, name: str = "<config>") -> YamlSource:
    """Parse YAML text (safe loader only) and record the line of every key."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name}: not valid YAML: {exc}") from None
    lines: dict[tuple, int] = {}
    data = {} if root is None else _walk(root, (), lines)
    return YamlSource(data=data, lines=lines, name=name)


_POLICY_KINDS = ("access", "mask", "row_filter", "limit_to_purpose", "differential_privacy")


def _clean_loc(loc: tuple) -> tuple:
    """Drop pydantic's internal parts: validator names and the union tag of a policy."""
    loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
    if len(loc) >= 4 and loc[0] == "policies" and loc[2] in _POLICY_KINDS and loc[3] == loc[2]:
        loc = loc[:3] + loc[4:]
    return loc


def format_problem(source: YamlSource, loc: tuple, message: str) -> str:
    """``file:line: policies[3] (name).rest: message`` for one problem."""
    from .references import policy_label

    line = source.line_of(loc)
    prefix = f"{source.name}:{line}" if line else source.name
    return f"{prefix}: {policy_label(source.data, loc)}: {message}"


def format_validation_error(exc: ValidationError, source: YamlSource) -> str:
    """Render every pydantic error as ``file:line: dotted.path: message``."""
    out = []
    for err in exc.errors():
        if err["type"] == "pgveil_references":
            base = _clean_loc(err["loc"])
            for loc, msg in err["ctx"]["problems"]:
                out.append(format_problem(source, base + tuple(loc), msg))
            continue
        out.append(format_problem(source, _clean_loc(err["loc"]), err["msg"]))
    return "\n".join(out)


def validate_references(config, source: YamlSource) -> tuple[list[str], list[str]]:
    """(errors, warnings) of a validated config's cross-references, as file:line messages.

    Errors also stop validation itself; this gives the proxy the warnings
    (e.g. a group no user is in) to log at startup.
    """
    from .references import reference_problems

    errors, warnings = [], []
    for level, loc, msg in reference_problems(config):
        (errors if level == "error" else warnings).append(format_problem(source, loc, msg))
    return errors, warnings
