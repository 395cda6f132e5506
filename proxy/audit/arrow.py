"""The Arrow schema of audit records, and reading/converting audit files with it.

Shared by the writer (which converts rotated ``.jsonl`` files to ``.parquet``) and
the summary (which reads both), so the two can never disagree about a column.
"""
from __future__ import annotations

import io
import json
import logging
import os
from datetime import timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pj
import pyarrow.parquet as pq

from .record import AuditRecord

log = logging.getLogger("pgveil.audit")

SCHEMA = pa.schema([
    ("ts", pa.timestamp("ms", tz="UTC")),
    ("user", pa.string()),
    ("client_addr", pa.string()),
    ("database", pa.string()),
    ("purpose", pa.string()),
    ("project", pa.string()),
    ("session_id", pa.string()),
    ("statement_kind", pa.string()),
    ("tables", pa.list_(pa.string())),
    ("columns", pa.list_(pa.string())),
    ("policies", pa.list_(pa.string())),
    ("decision", pa.string()),
    ("sqlstate", pa.string()),
    ("rows", pa.int64()),
    ("duration_ms", pa.float64()),
    ("sql_hash", pa.string()),
    ("unrestricted", pa.bool_()),
])

_PARSE = pj.ParseOptions(explicit_schema=SCHEMA, unexpected_field_behavior="ignore")
_READ = pj.ReadOptions(block_size=16 << 20)


def read_jsonl(path: str | Path) -> pa.Table:
    """A ``.jsonl`` audit file as a table in SCHEMA.

    A file a live (or crashed) writer was appending to may end in a partial line;
    the fast C++ reader refuses the whole file then, so fall back to keeping only the
    lines that parse, and say how many were skipped.
    """
    data = Path(path).read_bytes()
    if not data.strip():
        return SCHEMA.empty_table()
    try:
        return pj.read_json(io.BytesIO(data), read_options=_READ, parse_options=_PARSE)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    good, bad = [], 0
    for line in data.splitlines():
        try:
            if isinstance(json.loads(line), dict):
                good.append(line)
                continue
        except ValueError:
            pass
        bad += line.strip() != b""
    if bad:
        log.warning("audit: %s: skipped %d unreadable line(s)", path, bad)
    if not good:
        return SCHEMA.empty_table()
    return pj.read_json(io.BytesIO(b"\n".join(good) + b"\n"), read_options=_READ, parse_options=_PARSE)


def read_parquet(path: str | Path) -> pa.Table:
    """A ``.parquet`` audit file as a table in SCHEMA (missing columns become nulls)."""
    table = pq.read_table(path)
    if table.schema.equals(SCHEMA):
        return table
    columns = [table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
               for f in SCHEMA]
    return pa.Table.from_arrays(columns, schema=SCHEMA)


def read_file(path: str | Path) -> pa.Table:
    return read_parquet(path) if str(path).endswith(".parquet") else read_jsonl(path)


def convert_to_parquet(src: str | Path) -> Path:
    """Convert one finished ``audit-*.jsonl`` file to ``audit-*.parquet`` beside it.

    The ``.jsonl`` is removed only once the Parquet file is in place under its final
    name and reads back equal to what was converted; on any failure the ``.jsonl``
    stays and the error propagates. The temporary name carries the pid so two
    processes converting the same orphan never write one file.
    """
    src = Path(src)
    table = read_jsonl(src)
    dst = src.with_suffix(".parquet")
    tmp = dst.with_name(f"{dst.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()
    if not read_parquet(dst).equals(table):
        dst.unlink(missing_ok=True)
        raise ValueError(f"audit: {dst} does not read back equal to {src}; kept the .jsonl")
    src.unlink(missing_ok=True)
    return dst


def read_records(path: str | Path) -> list[AuditRecord]:
    """Every record in one audit file, as written (timestamps back in ISO form)."""
    out = []
    for row in read_file(path).to_pylist():
        row["ts"] = row["ts"].astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        out.append(AuditRecord.from_dict(row))
    return out
