"""Tables in the store (``tables/<name>``), and source documents kept verbatim.

A table is a 1-D xarray dataset over ``row``; it is rewritten whole under the store lock,
merged with what is there by its key columns, so re-running a step adds no duplicates.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr
import zarr
from seismoflow.storage.location import node_location
from seismoflow.storage.schema import SOURCES, TABLES

TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "catalog": ("event_id",),
    "channels": ("network", "station", "location", "channel", "start_ns"),
    "channel_days": ("channel", "day_ns"),
    "quarantine": ("source", "reason", "channel", "start_ns"),
    "fetch_requests": (
        "provider", "network", "station", "location", "channel", "start_ns", "end_ns"
    ),
}


def read_table(location: str, name: str) -> pd.DataFrame:
    """A table as a DataFrame (empty if the store has none yet)."""
    table = node_location(location, f"{TABLES}/{name}")
    try:
        zarr.open_group(table, mode="r", zarr_format=3, use_consolidated=False)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return pd.DataFrame(columns=list(TABLE_KEYS.get(name, ())))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = xr.open_zarr(table, consolidated=False)
        df = ds.load().to_dataframe().reset_index(drop=True)
        # Column order as written (zarr lists arrays in no particular order).
        df = df[[c for c in ds.attrs.get("columns", sorted(df.columns)) if c in df.columns]]
    for col in df.columns:
        if df[col].dtype.kind in "OT" or str(df[col].dtype).startswith("String"):
            df[col] = df[col].astype(object).where(df[col].notna(), "").astype(str)
    return df


def _clean(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].fillna("").astype(str).to_numpy(dtype=object)
    return out


def write_table(
    location: str, name: str, rows: pd.DataFrame, replace_keys: Sequence[str] | None = None
) -> pd.DataFrame:
    """Merge ``rows`` into table ``name`` by its key columns (new rows win); call under lock.

    Returns the table as written.
    """
    keys = list(replace_keys or TABLE_KEYS[name])
    old = read_table(location, name)
    new = _clean(rows)
    if len(old):
        old = _clean(old)
        for col in keys:
            old[col] = old[col].astype(new[col].dtype) if col in new else old[col]
        merged = pd.concat([old, new], ignore_index=True)
    else:
        merged = new
    merged = merged.drop_duplicates(subset=keys, keep="last").sort_values(keys)
    merged = _clean(merged.reset_index(drop=True))
    ds = xr.Dataset({col: ("row", merged[col].to_numpy()) for col in merged.columns})
    ds.attrs["key"] = keys
    ds.attrs["columns"] = list(merged.columns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(location, group=f"{TABLES}/{name}", mode="w", consolidated=False, zarr_format=3)
    return merged


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
        chunks=(max(1, min(len(content), 8 << 20)),),
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
