"""Run ``pgveil serve`` as a real subprocess against the test PostgreSQL."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from .pgfixture import PASSWORDS, PgServer


def write_config(path: Path, pg: PgServer, **listen) -> Path:
    config = {
        "listen": {"host": "127.0.0.1", "port": 0, **listen},
        "backend": {"dsn": f"postgresql://{pg.service_user}@{pg.host}:{pg.port}/{pg.database}",
                    "password_env": "PGVEIL_TEST_BACKEND_PW"},
        "users": {name: {"password_env": f"PGVEIL_TEST_PW_{name.upper()}", "unrestricted": name == "root"}
                  for name in PASSWORDS},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def env_for(pg: PgServer) -> dict[str, str]:
    env = dict(os.environ)
    env["PGVEIL_TEST_BACKEND_PW"] = pg.service_password
    for name, pw in PASSWORDS.items():
        env[f"PGVEIL_TEST_PW_{name.upper()}"] = pw
    return env


class ProxyProcess:
    """``python -m proxy serve`` in a child process; ``port`` is read from its output."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--config", str(config)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
        self.output: list[str] = []
        deadline = time.monotonic() + 30
        self.port = None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            if line.startswith("pgveil: listening on"):
                self.port = int(line.rsplit(":", 1)[1])
                break
        if self.port is None:
            self.proc.kill()
            raise RuntimeError("proxy did not start:\n" + "".join(self.output) + (self.proc.stdout.read() or ""))
        # Keep reading its log: a full pipe would block the proxy on its next log line.
        threading.Thread(target=self._drain, name="pgveil-log", daemon=True).start()

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.output.append(line)
            if len(self.output) > 5000:
                del self.output[:1000]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()
