"""One consistent snapshot of everything a statement is judged by.

A ``PolicyState`` bundles the validated config, the compiled policies, user
verifiers, the backend catalog and the key provider. The ``PolicyHolder``
swaps whole snapshots (hot reload, catalog refresh), and a session takes the
current one once per statement, so no statement ever runs under a mix of an
old and a new policy.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path

import platformdirs

from rewrite.catalog import Catalog
from rewrite.decide import PolicySet
from rewrite.gates import GateContext
from rewrite.policy import ConfigError

from .auth import Verifier
from .config import Config

log = logging.getLogger("pgveil.policy")
SEARCH_PATH = ("public",)  # pinned on every backend session (see session.startup_params.PINNED)


class MasterKeys:
    """Per-table keys derived from one master secret by HMAC-SHA256 (never sent as SQL text)."""

    def __init__(self, master: bytes) -> None:
        self._master = master

    def key_for(self, table_oid: int, purpose: str) -> bytes:
        return hmac.new(self._master, f"{purpose}:{table_oid}".encode(), hashlib.sha256).digest()


def load_master_key(config: Config) -> bytes:
    keys = config.keys
    if keys.master_key_env:
        value = os.environ.get(keys.master_key_env)
        if not value:
            raise ConfigError(f"keys.master_key_env: environment variable {keys.master_key_env} is not set")
        return value.encode()
    path = keys.master_key_file or Path(platformdirs.user_data_dir("pgveil")) / "master.key"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_hex(32).encode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key + b"\n")
        log.info("created a new master key in %s (keep it: hashes change if it does)", path)
        return key
    except OSError as exc:
        raise ConfigError(f"keys.master_key_file: cannot read {path}: {exc}") from None


@dataclass(frozen=True, eq=False)
class PolicyState:
    config: Config
    policies: PolicySet
    verifiers: dict[str, Verifier]
    keys: MasterKeys
    catalog: Catalog | None = None
    gate_context: GateContext = field(default_factory=lambda: GateContext(search_path=SEARCH_PATH))

    @classmethod
    def build(cls, config: Config, verifiers: dict[str, Verifier], catalog: Catalog | None = None) -> "PolicyState":
        return cls(config, PolicySet.from_config(config), verifiers, MasterKeys(load_master_key(config)), catalog)

    def with_catalog(self, catalog: Catalog) -> "PolicyState":
        return replace(self, catalog=catalog)

    @property
    def version(self) -> tuple:
        return (self.policies.version, self.catalog.version if self.catalog else None)


class PolicyHolder:
    """Holds the current PolicyState; replaced whole, read once per statement."""

    def __init__(self, state: PolicyState) -> None:
        self.current = state
        self.generation = 0  # bumped on every swap: caches keyed by it never outlive their state
        self._listeners: list = []  # weakref.WeakMethod (or other weak callables) of state -> None

    def on_swap(self, listener) -> None:
        """Call ``listener()(state)`` after every swap while it is alive (a weak reference, e.g. WeakMethod)."""
        self._listeners.append(listener)

    def swap(self, state: PolicyState) -> None:
        self.current = state
        self.generation += 1
        alive = []
        for ref in self._listeners:
            listener = ref()
            if listener is not None:
                alive.append(ref)
                listener(state)
        self._listeners = alive
