"""Rewrite a schema-2 store as schema 3 (``seismoflow migrate``), every sample identical.

Schema 2 kept one group per channel-year with ``data`` and ``mask`` rows and seven
one-element arrays per day; schema 3 keeps one sharded array per channel and the per-day
values in ``tables/channel_days`` (STORE.md). The schema-2 store is read through zarr's
public API only and never modified: the new store is written beside it and, for a local
folder, swapped in when it is complete (the old one stays as ``{store}.schema2`` until the
user deletes it). A migration killed midway leaves the old store untouched; running it
again starts the new one over.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
import zarr
from seismoflow.storage.continuous import LEDGER, ChannelArray, DayRecord, ledger_frame
from seismoflow.storage.events import WINDOW_GROUPS, WINDOW_LEDGER
from seismoflow.storage.finalize import finalize_store
from seismoflow.storage.fsio import is_local, local_path
from seismoflow.storage.location import open_root
from seismoflow.storage.schema import (
    CONTINUOUS,
    FEATURES,
    FLAT_KEYS,
    MIGRATABLE,
    PREDICTIONS,
    SCHEMA_VERSION,
    SOURCES,
    TABLES,
    ContinuousLayout,
    EventWindowLayout,
    SchemaError,
    append_traces,
    create_continuous_many,
    create_events,
    fit_chunk,
)
from seismoflow.storage.tables import append_rows, write_source_document

from seismoflow.errors import StoreError
from seismoflow.ids import ChannelId
from seismoflow.times import NAT, samples_per_day

# Tables schema 3 rebuilds rather than copies (the ledger comes from the per-day arrays).
REBUILT_TABLES = frozenset({LEDGER})
ROWS_PER_PART = 2_000


def _group(node: Any) -> zarr.Group:
    assert isinstance(node, zarr.Group)
    return node


def _array(node: Any) -> zarr.Array:
    assert isinstance(node, zarr.Array)
    return node


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _migrate_channel(
    old: zarr.Group, new_root: zarr.Group, dest: str, rows: list[DayRecord]
) -> dict[str, int]:
    """One channel: its channel-years into its array (one per sampling rate); its days'
    ledger records into ``rows``. Returns counts."""
    years = sorted(old.groups(), key=lambda kv: kv[0])
    if not years:
        return {"days": 0, "samples": 0}
    attrs = [dict(g.attrs) for _, g in years]
    targets: dict[float, ChannelArray] = {}
    for a, (_, year) in zip(attrs, years, strict=True):
        rate = float(a["sampling_rate"])
        if rate in targets:
            continue
        spd = samples_per_day(rate)
        chunk = int(a.get("chunk_samples") or _array(year["data"]).chunks[1])
        layout = ContinuousLayout(
            ChannelId(a["network"], a["station"], a["location"], a["channel"]),
            rate,
            fit_chunk(spd, chunk),
            str(a.get("codec", "pcodec")),
            int(a.get("codec_level", 6)),
            int(a.get("pcodec_page", 16_384)),
        )
        create_continuous_many(new_root, [layout])
        targets[rate] = ChannelArray(_array(new_root[layout.path]), layout)
    counts = {"days": 0, "samples": 0}
    for (year_name, year), a in zip(years, attrs, strict=True):
        target = targets[float(a["sampling_rate"])]
        spd = target.samples_per_day
        year_start = np.datetime64(f"{int(a.get('year', year_name)):04d}-01-01", "ns")
        done = np.asarray(_array(year["ingested_at"])[:], dtype=np.int64)
        state = np.asarray(_array(year["sources"])[:]).astype(object)
        todo = [d for d in np.flatnonzero(done != NAT).tolist() if _text(state[d]) != "writing"]
        if not todo:
            continue
        per_day = {
            v: np.asarray(_array(year[v])[:]).astype(object)
            for v in ("starttime", "n_samples", "flags", "segments", "quarantine")
        }
        data, mask = _array(year["data"]), _array(year["mask"])
        for d in todo:
            day_ns = int((year_start + np.timedelta64(d, "D")).astype(np.int64))
            n = int(per_day["n_samples"][d])
            row = np.asarray(data[d, :], dtype=np.int32) if n else np.zeros(0, np.int32)
            valid = np.asarray(mask[d, :], dtype=bool) if n else np.zeros(0, bool)
            if n and int(np.count_nonzero(valid)) != n:
                raise StoreError(
                    f"{year.path} day {d}: the mask holds {int(np.count_nonzero(valid))} "
                    f"samples, n_samples says {n}; the schema-2 store is inconsistent, "
                    "re-ingest this channel instead of migrating it"
                )
            segments = json.loads(_text(per_day["segments"][d]) or "[]")
            record = target.write_day(
                day_ns,
                t0_ns=int(per_day["starttime"][d]),
                offset=0,
                data=row[:spd],
                mask=valid[:spd],
                flags=int(per_day["flags"][d]),
                segments=segments,
                quarantine=json.loads(_text(per_day["quarantine"][d]) or "[]"),
                sources=json.loads(_text(state[d]) or "[]"),
                fresh=True,
            )
            rows.append(replace(record, ingested_at_ns=int(done[d])))
            counts["days"] += 1
            counts["samples"] += n
    return counts


def _flush(dest: str, rows: list[DayRecord], force: bool = False) -> None:
    if rows and (force or len(rows) >= ROWS_PER_PART):
        append_rows(dest, LEDGER, ledger_frame(rows))
        rows.clear()


def _copy_array(src: zarr.Array, group: zarr.Group, name: str) -> None:
    meta = src.metadata.to_dict()
    kind = str(meta.get("data_type"))
    dtype: Any = "str" if kind == "string" else src.dtype
    arr = group.create_array(
        name,
        shape=src.shape,
        chunks=src.chunks,
        dtype=dtype,
        fill_value=src.fill_value,
        dimension_names=meta.get("dimension_names"),
        attributes=dict(src.attrs),
        chunk_key_encoding=FLAT_KEYS,
    )
    if src.size:
        arr[...] = src[...]


def _copy_group(src: zarr.Group, dest_root: zarr.Group, path: str) -> None:
    group = dest_root.require_group(path)
    group.attrs.update({**dict(src.attrs), "seismoflow_schema": SCHEMA_VERSION})
    for name, arr in src.arrays():
        _copy_array(arr, group, name)
    for name, sub in src.groups():
        _copy_group(sub, dest_root, f"{path}/{name}")


def _migrate_windows(old: zarr.Group, name: str, new_root: zarr.Group, dest: str) -> int:
    a = dict(old.attrs)
    layout = EventWindowLayout(
        float(a["sampling_rate"]), float(a["pre_s"]), float(a["post_s"]), str(a["reference"])
    )
    group = create_events(new_root, layout, name)
    coords = [n for n, _ in old.arrays() if n not in ("waveform", "component", "time")]
    columns = {n: np.asarray(_array(old[n])[:]) for n in coords}
    n_traces = int(_array(old["trace_key"]).shape[0])
    if n_traces == 0:
        return 0
    rows = [{n: columns[n][i] for n in coords} for i in range(n_traces)]
    append_traces(group, rows)
    old_wave, new_wave = _array(old["waveform"]), _array(group["waveform"])
    for i in range(0, n_traces, 256):
        new_wave[i : i + 256] = old_wave[i : i + 256]
    written = columns["written_at"].astype(np.int64)
    done = np.flatnonzero(written != NAT)
    if len(done):
        append_rows(
            dest,
            WINDOW_LEDGER,
            pd.DataFrame(
                {
                    "group": name,
                    "trace": done.astype(np.int64),
                    "trace_key": columns["trace_key"][done].astype(str),
                    "flags": columns["flags"][done].astype(np.int64),
                    "written_at_ns": written[done],
                }
            ),
        )
    return n_traces


def _old_table(location: str, path: str) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = xr.open_zarr(f"{location.rstrip('/')}/{path}", consolidated=False)
        df = ds.load().to_dataframe().reset_index(drop=True)
        return df[[c for c in ds.attrs.get("columns", sorted(df.columns)) if c in df.columns]]


def migrate_store(location: str, out: str | None = None) -> dict[str, Any]:
    """Rewrite the schema-2 store at ``location`` as schema 3.

    Without ``out`` (local folders only) the new store replaces the old one, which is kept
    as ``{location}.schema2``; with ``out`` the new store is written there and the old one
    is left as it is. Returns counts of what was migrated.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            old = zarr.open_group(location, mode="r", zarr_format=3, use_consolidated=False)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
            raise StoreError(f"no seismoflow store at {location}; check --store") from exc
    version = int(old.attrs.get("seismoflow_schema", 0))
    if version == SCHEMA_VERSION:
        raise StoreError(f"{location} is already schema {SCHEMA_VERSION}; nothing to migrate")
    if version not in MIGRATABLE:
        raise StoreError(
            f"{location} is schema {version}; `seismoflow migrate` rewrites schema "
            f"{', '.join(map(str, MIGRATABLE))} stores only"
        )
    if out is None and not is_local(location):
        raise StoreError(
            f"{location} is not a local folder: give --out with the new store's URL (object "
            "stores cannot swap folders in place)"
        )
    dest = out or f"{location.rstrip('/')}.schema3-migrating"
    if is_local(dest) and local_path(dest).exists():
        if out is not None:
            raise StoreError(f"{dest} exists; choose a new --out")
        shutil.rmtree(local_path(dest))  # an earlier migration that did not finish
    new_root = open_root(dest)
    new_root.attrs.update({k: v for k, v in old.attrs.items() if k != "seismoflow_schema"})
    counts: dict[str, Any] = {"channels": 0, "channel_days": 0, "samples": 0, "traces": {}}
    rows: list[DayRecord] = []
    if CONTINUOUS in old:
        for _, channel in sorted(_group(old[CONTINUOUS]).groups(), key=lambda kv: kv[0]):
            got = _migrate_channel(channel, new_root, dest, rows)
            counts["channels"] += 1
            counts["channel_days"] += got["days"]
            counts["samples"] += got["samples"]
            _flush(dest, rows)
    _flush(dest, rows, force=True)
    if TABLES in old:
        for name, _ in _group(old[TABLES]).groups():
            if name in REBUILT_TABLES:
                continue
            table = _old_table(location, f"{TABLES}/{name}")
            if len(table):
                append_rows(dest, name, table)
    for name in WINDOW_GROUPS:
        if name in old:
            counts["traces"][name] = _migrate_windows(_group(old[name]), name, new_root, dest)
    for path in (FEATURES, PREDICTIONS):
        if path in old:
            _copy_group(_group(old[path]), new_root, path)
    if SOURCES in old:
        for _, doc in _group(old[SOURCES]).arrays():
            a = dict(doc.attrs)
            content = np.asarray(doc[:], dtype=np.uint8).tobytes()
            write_source_document(
                new_root, str(a["kind"]), content, str(a["filename"]), str(a["media_type"])
            )
    finalize_store(dest)
    if out is None:
        kept = f"{location.rstrip('/')}.schema2"
        if local_path(kept).exists():
            raise SchemaError(f"{kept} exists: move it away, then run migrate again")
        os.replace(local_path(location), local_path(kept))
        os.replace(local_path(dest), local_path(location))
        counts.update({"store": location, "old_store_kept_at": kept})
    else:
        counts.update({"store": dest, "old_store": location})
    return counts
