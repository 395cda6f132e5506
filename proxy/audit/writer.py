"""AuditWriter: O(1) on the event loop, all file work on one background thread.

``write()`` runs on the proxy's hot path, once per statement, so it only appends the
(frozen) record to a deque. Serializing it (about as costly as the append is
cheap), writing, rotating and converting happen on the writer thread, which drains
the deque at least every ``flush_interval_s`` and on ``close()``. Lines are written
with plain ``write`` and no fsync: a crashed *process* loses nothing already handed
to the kernel, and an fsync per flush would tie the audit rate to the disk's.

When the disk refuses a write the lines stay in memory and are retried every tick;
past ``max_pending`` records in memory, new records are counted in ``dropped`` and
discarded. The proxy is never blocked and never sees an exception from ``write()``.
"""
from __future__ import annotations

import atexit
import collections
import logging
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from . import arrow
from .record import AuditRecord

log = logging.getLogger("pgveil.audit")

MiB = 1 << 20


class AuditWriter:
    """Append audit records to ``audit-<UTC timestamp>-<pid>.jsonl`` files in ``directory``.

    Call ``write()`` from one thread (the event loop); call ``close()`` once at shutdown.
    """

    def __init__(self, directory: str | Path, *, max_bytes: int = 64 * MiB, max_age_s: float = 3600.0,
                 convert_to_parquet: bool = True, flush_interval_s: float = 0.2,
                 max_pending: int = 100_000) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)   # a bad path fails at startup, loudly
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.convert = convert_to_parquet
        self.flush_interval_s = flush_interval_s
        self.max_pending = max_pending
        self.dropped = 0          # records discarded because memory was full (or after close)
        self.written = 0          # records handed to the kernel
        self.files: list[Path] = []   # finished files (as .parquet when converted)
        self._queue: collections.deque[AuditRecord] = collections.deque()
        self._backlog: list[bytes] = []   # serialized lines the disk refused (writer thread only)
        self._backlog_len = 0             # read by write() for the memory bound
        self._wake_at = max(1, min(10_000, max_pending // 4))
        self._wake = threading.Event()
        self._closing = False
        self._failing = False
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self._opened_at = 0.0
        self._thread = threading.Thread(target=self._run, name="pgveil-audit", daemon=True)
        self._thread.start()
        atexit.register(self.close)   # a forgotten close() still flushes at interpreter exit

    # --- caller's thread ---------------------------------------------------------------

    def write(self, record: AuditRecord) -> None:
        """Queue one record. Never blocks, never raises."""
        if self._closing or len(self._queue) + self._backlog_len >= self.max_pending:
            self.dropped += 1
            return
        self._queue.append(record)
        if len(self._queue) == self._wake_at:   # a burst: drain before the tick
            self._wake.set()

    @property
    def pending(self) -> int:
        """Records in memory, not yet on disk."""
        return len(self._queue) + self._backlog_len

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush everything, finish (and convert) the current file, stop the thread."""
        if self._closing:
            return
        self._closing = True
        atexit.unregister(self.close)
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("audit: writer did not finish within %ss; %d record(s) may be lost", timeout, self.pending)
        elif self.pending:
            log.error("audit: %d record(s) could not be written to %s", self.pending, self.directory)

    # --- writer thread ------------------------------------------------------------------

    def _run(self) -> None:
        if self.convert:
            self._convert_orphans()
        while not self._closing:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            self._tick()
        self._tick()
        if self._fd is not None:
            self._finish_file()

    def _tick(self) -> None:
        try:
            if self._fd is not None and time.monotonic() - self._opened_at >= self.max_age_s:
                self._finish_file()
            queue = self._queue
            n = len(queue)
            if n == 0 and not self._backlog:
                return
            # Counted before popped, so the bound never undercounts; the pop is quick, so
            # the double count is brief. Serializing comes after, off the count.
            self._backlog_len += n
            records = [queue.popleft() for _ in range(n)]
            lines = self._backlog
            lines.extend((r.to_json() + "\n").encode("utf-8", "surrogatepass") for r in records)
            done = self._write_lines(lines)
            self._backlog = lines[done:]
            self._backlog_len = len(self._backlog)
        except Exception:   # never let the thread die: the proxy would silently lose audit
            log.exception("audit: unexpected error in the writer thread")

    def _write_lines(self, lines: list[bytes]) -> int:
        """Write as many lines as the disk takes, rotating by size; return how many."""
        i = 0
        try:
            while i < len(lines):
                if self._fd is None:
                    self._open_file()
                budget, j, n = self.max_bytes - self._size, i, 0
                while j < len(lines) and (n + len(lines[j]) <= budget or (j == i and self._size == 0)):
                    n += len(lines[j])
                    j += 1
                if j == i:   # the current file is full
                    self._finish_file()
                    continue
                self._write_all(b"".join(lines[i:j]))
                self.written += j - i
                i = j
                if self._size >= self.max_bytes:
                    self._finish_file()
        except OSError as exc:
            if not self._failing:
                log.error("audit: cannot write to %s (%s); keeping up to %d record(s) in memory",
                          self.directory, exc, self.max_pending)
            self._failing = True
            return i
        if self._failing:
            log.warning("audit: writing to %s again (%d record(s) dropped so far)", self.directory, self.dropped)
            self._failing = False
        return i

    def _write_all(self, blob: bytes) -> None:
        view = memoryview(blob)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError:
            # Undo a partial write so the retry neither duplicates nor splits a line.
            try:
                os.ftruncate(self._fd, self._size)
                os.lseek(self._fd, self._size, os.SEEK_SET)
            except OSError:
                os.close(self._fd)   # cannot repair: abandon this file as it is
                self._fd, self._path = None, None
            raise
        self._size += len(blob)

    def _open_file(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        while True:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
            path = self.directory / f"audit-{stamp}-{os.getpid()}.jsonl"
            try:
                self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
                break
            except FileExistsError:
                time.sleep(0.000_01)
        self._path, self._size, self._opened_at = path, 0, time.monotonic()

    def _finish_file(self) -> None:
        fd, path = self._fd, self._path
        self._fd, self._path = None, None
        try:
            os.close(fd)
        except OSError as exc:
            log.error("audit: closing %s: %s", path, exc)
        self.files.append(self._converted(path) if self.convert else path)

    def _converted(self, path: Path) -> Path:
        try:
            return arrow.convert_to_parquet(path)
        except Exception as exc:   # keep the .jsonl: the summary reads it just as well
            log.error("audit: could not convert %s to Parquet: %s", path, exc)
            return path

    def _convert_orphans(self) -> None:
        """Convert ``.jsonl`` files left by processes on this host that are gone."""
        for path in sorted(self.directory.glob("audit-*-*.jsonl")):
            try:
                pid = int(path.stem.rsplit("-", 1)[1])
            except ValueError:
                continue
            if pid != os.getpid() and not _alive(pid) and not path.with_suffix(".parquet").exists():
                self._converted(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True   # exists, owned by someone else
    return True
