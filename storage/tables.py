"""Tables in the store (``tables/<name>/``), and source documents kept verbatim.

A table is a folder of Parquet parts, ``part-{written_ns:020d}-{token}.parquet``. A writer
never rewrites a part: it appends a new one, written atomically (a local temporary file
renamed into place, or one PUT on an object store), so a writer killed at any moment
leaves every earlier row intact and no half-written part visible. Readers concatenate the
parts and keep, for each key (``TABLE_KEYS``), the row written last (``_written_ns``, a
column of every part). :func:`compact_table` folds many parts into one: it writes the
merged part first and only then deletes the parts it read, so a reader at any moment sees
the same rows.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import zarr
from seismoflow.storage.fsio import (
    delete,
    is_local,
    list_names,
    read_bytes,
    read_many,
    write_bytes,
)
from seismoflow.storage.schema import FLAT_KEYS, SOURCES, TABLES

TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "catalog": ("event_id",),
    "channels": ("network", "station", "location", "channel", "start_ns"),
    # the continuous ledger: one row per channel-day (STORE.md)
    "channel_days": ("channel", "day_ns"),
    "quarantine": ("source", "reason", "channel", "start_ns"),
    "fetch_requests": (
        "provider", "network", "station", "location", "channel", "start_ns", "end_ns"
    ),
    # the window ledger: one row per written window trace
    "windows": ("group", "trace"),
    # analyst labels, versioned: one row per event and import (seismoflow.analyst)
    "analyst_labels": ("event_id", "version"),
}
ORDER = "_written_ns"
PART_SUFFIX = ".parquet"
# A table with more parts than this is compacted when a run finalizes the store.
COMPACT_AFTER = 4


def table_prefix(name: str) -> str:
    return f"{TABLES}/{name}"


def part_names(location: str, name: str) -> list[str]:
    """The table's parts, oldest first."""
    return [
        n for n in list_names(location, table_prefix(name))
        if n.startswith("part-") and n.endswith(PART_SUFFIX)
    ]


def _part_tables(location: str, name: str) -> tuple[list[str], list[pa.Table]]:
    """The listed parts and their Arrow tables; listed again if a compaction removed a part
    meanwhile (its rows are then in a newer part). On an object store the parts are fetched
    concurrently (a batch's ledger read is one listing and one round of GETs, not one GET
    after another)."""
    local = is_local(location)
    for _ in range(5):
        parts = part_names(location, name)
        keys = [f"{table_prefix(name)}/{part}" for part in parts]
        raws = [read_bytes(location, k) for k in keys] if local else read_many(location, keys)
        if all(raw is not None for raw in raws):
            break
    return parts, [pq.read_table(io.BytesIO(raw)) for raw in raws if raw is not None]


def _latest(df: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """One row per key: the one written last."""
    if df.empty:
        return df
    if ORDER in df:
        df = df.sort_values(ORDER, kind="stable")
    keys = [k for k in keys if k in df]
    df = df.drop_duplicates(subset=keys, keep="last") if keys else df
    return df.sort_values(keys, kind="stable").reset_index(drop=True) if keys else df


def _all_rows(location: str, name: str) -> tuple[list[str], pd.DataFrame]:
    """Every part's rows (:func:`_part_tables`) in one DataFrame."""
    parts, tables = _part_tables(location, name)
    frames = [f for f in (table.to_pandas() for table in tables) if len(f.columns)]
    if not frames:
        return parts, pd.DataFrame()
    return parts, (pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0])


def read_table(location: str, name: str, keys: Sequence[str] | None = None) -> pd.DataFrame:
    """A table as a DataFrame, one row per key (empty if the store has none yet)."""
    _, df = _all_rows(location, name)
    if df.empty:
        return pd.DataFrame(columns=list(TABLE_KEYS.get(name, ())))
    df = _latest(df, keys or TABLE_KEYS.get(name, ()))
    df = df.drop(columns=[ORDER], errors="ignore")
    return _clean(df)


def read_records(location: str, name: str) -> list[dict[str, Any]]:
    """The rows of :func:`read_table` as dicts, one per key (the one written last), without
    pandas: a reader of a few rows (the ledger of one read-back) pays ~3 ms, not ~20.
    Columns a part lacks are ``None``; values are as Parquet stores them."""
    keys = TABLE_KEYS.get(name, ())
    _, tables = _part_tables(location, name)
    rows = [row for table in tables for row in table.to_pylist()]
    rows.sort(key=lambda r: r.get(ORDER) or 0)  # stable: parts are listed oldest first
    out = rows
    if keys:
        latest = {tuple(r.get(k) for k in keys): r for r in rows}
        out = [latest[k] for k in sorted(latest, key=_sort_key)]
    for row in out:
        row.pop(ORDER, None)
    return out


def _sort_key(key: tuple[Any, ...]) -> tuple[tuple[bool, Any], ...]:
    return tuple((v is None, v) for v in key)


def _clean(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].fillna("").astype(str).to_numpy(dtype=object)
    return out


def _part_bytes(df: pd.DataFrame) -> bytes:
    table = pa.Table.from_pandas(df, preserve_index=False)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def append_rows(location: str, name: str, rows: pd.DataFrame) -> str:
    """Append ``rows`` to table ``name`` as a new part; return the part's name.

    Safe without the store lock: parts have unique names and are written atomically."""
    now = time.time_ns()
    df = _clean(rows.reset_index(drop=True))
    df[ORDER] = np.int64(now)
    part = f"part-{now:020d}-{secrets.token_hex(6)}{PART_SUFFIX}"
    write_bytes(location, f"{table_prefix(name)}/{part}", _part_bytes(df))
    return part


def write_table(
    location: str, name: str, rows: pd.DataFrame, replace_keys: Sequence[str] | None = None
) -> None:
    """Add ``rows`` to table ``name``; a row replaces an earlier one with the same key
    (``TABLE_KEYS[name]``, or ``replace_keys`` for a table not listed there)."""
    if name not in TABLE_KEYS and not replace_keys:
        raise KeyError(f"table {name!r} has no key; pass replace_keys")
    if len(rows):
        append_rows(location, name, rows)


def compact_table(location: str, name: str, keys: Sequence[str] | None = None) -> int:
    """Fold the table's parts into one when it has more than ``COMPACT_AFTER``.

    The merged part is written (atomically) before the parts it replaces are deleted, so
    readers see the same rows throughout, and a kill leaves at worst duplicate rows that
    readers drop. Parts appended meanwhile are not touched. Returns the parts removed."""
    parts, df = _all_rows(location, name)
    if len(parts) <= COMPACT_AFTER:
        return 0
    if ORDER not in df:
        df[ORDER] = np.int64(time.time_ns())
    merged = _latest(df, keys or TABLE_KEYS.get(name, ()))
    last = int(merged[ORDER].max()) if len(merged) else time.time_ns()
    part = f"part-{last:020d}-compact-{secrets.token_hex(6)}{PART_SUFFIX}"
    write_bytes(location, f"{table_prefix(name)}/{part}", _part_bytes(_clean(merged)))
    for old in parts:
        delete(location, f"{table_prefix(name)}/{old}")
    return len(parts)


def compact_tables(location: str) -> None:
    for name in list_names(location, TABLES):
        compact_table(location, name)


def write_source_document(
    root: zarr.Group, kind: str, content: bytes, filename: str, media_type: str
) -> str:
    """Keep a source document (StationXML, QuakeML) byte for byte; return its store path.

    Documents are named by content hash, so the same file stored twice is stored once.
    """
    sha = hashlib.sha256(content).hexdigest()
    path = f"{SOURCES}/{kind}_{sha[:16]}"
    if path in root:
        return path
    arr = root.create_array(
        path,
        shape=(len(content),),
        chunks=(max(1, len(content)),),
        chunk_key_encoding=FLAT_KEYS,
        dtype="uint8",
        # One dimension per document: xarray needs one size per dimension name.
        dimension_names=(f"{kind}_{sha[:16]}_byte",),
        attributes={"filename": filename, "sha256": sha, "media_type": media_type, "kind": kind},
    )
    arr[:] = np.frombuffer(content, dtype=np.uint8)
    return path


def read_source_document(root: zarr.Group, path: str) -> bytes:
    arr = root[path]
    assert isinstance(arr, zarr.Array)
    return np.asarray(arr[:], dtype=np.uint8).tobytes()
