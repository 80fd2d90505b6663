"""Write a schema-2 store (the layout before schema 3) from a schema-3 one, for the
migration tests: through zarr's public API, array by array as schema 2 laid them out.

Schema 2 (STORE.md before schema 3): ``continuous/{NSLC}/{YEAR}`` groups holding ``data``
and ``mask`` (day, sample) chunked one day per chunk row, a ``day`` coordinate and seven
per-day arrays of one-element chunks (``starttime``, ``n_samples``, ``flags``,
``segments``, ``quarantine``, ``sources``, ``ingested_at``); ``tables/{name}`` as xarray
datasets over ``row``; window groups with ``flags`` and ``written_at`` chunked per trace;
chunk keys with ``/``.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
import xarray as xr
import zarr
from seismoflow.storage.continuous import DayLedger, open_channel
from seismoflow.storage.events import WINDOW_GROUPS, written_traces
from seismoflow.storage.location import open_root
from seismoflow.storage.schema import integer_codec_kwargs, layout_from_attrs
from seismoflow.storage.tables import TABLE_KEYS, part_names, read_table
from zarr.codecs import ZstdCodec

from seismoflow.ids import ChannelId
from seismoflow.times import NAT, NS_PER_DAY

DAY_VARS: dict[str, tuple[str, Any]] = {
    "starttime": ("int64", NAT),
    "n_samples": ("int64", 0),
    "flags": ("uint32", 0),
    "segments": ("str", ""),
    "quarantine": ("str", ""),
    "sources": ("str", ""),
    "ingested_at": ("int64", NAT),
}


def _days_in_year(year: int) -> int:
    return 366 if (year % 4 == 0 and year % 100 != 0) or year % 400 == 0 else 365


def _copy(src: zarr.Group, dest: zarr.Group) -> None:
    dest.attrs.update({**dict(src.attrs), "seismoflow_schema": 2})
    for name, arr in src.arrays():
        kind = str(arr.metadata.to_dict().get("data_type"))
        new = dest.create_array(
            name,
            shape=arr.shape,
            chunks=arr.chunks,
            dtype="str" if kind == "string" else arr.dtype,
            fill_value=arr.fill_value,
            dimension_names=arr.metadata.to_dict().get("dimension_names"),
            attributes=dict(arr.attrs),
        )
        if arr.size:
            new[...] = arr[...]
    for name, sub in src.groups():
        _copy(sub, dest.require_group(name))


def write_schema2(src: str, dest: str) -> None:
    """The schema-3 store ``src`` as a schema-2 store at ``dest``."""
    new = open_root(src, "r")
    old = zarr.open_group(dest, mode="w", zarr_format=3)
    old.attrs.update({**dict(new.attrs), "seismoflow_schema": 2})
    ledger = DayLedger(src)
    by_year: dict[tuple[str, int], list[Any]] = {}
    for (channel, day_ns), rec in ledger.rows.items():
        year = int(str(np.datetime64(day_ns, "ns").astype("datetime64[Y]")))
        by_year.setdefault((channel, year), []).append(rec)
    for (channel, year), recs in sorted(by_year.items()):
        handle = open_channel(new, ChannelId.parse(channel), recs[0].sampling_rate)
        assert handle is not None
        layout = layout_from_attrs(dict(handle.array.attrs))
        spd, n_days = layout.samples_per_day, _days_in_year(year)
        group = old.require_group(f"continuous/{channel}/{year:04d}")
        group.attrs.update(
            {
                **{k: v for k, v in layout.attrs().items() if k not in ("units", "long_name")},
                "year": year,
                "seismoflow_schema": 2,
            }
        )
        chunk = layout.chunk_samples
        data = group.create_array(
            "data", shape=(n_days, spd), chunks=(1, chunk), dtype="int32", fill_value=0,
            dimension_names=("day", "sample"),
            **integer_codec_kwargs(layout.codec, layout.codec_level, layout.pcodec_page),
        )
        mask = group.create_array(
            "mask", shape=(n_days, spd), chunks=(1, chunk), dtype="bool", fill_value=False,
            dimension_names=("day", "sample"), compressors=[ZstdCodec(level=3)],
        )
        arrays = {
            name: group.create_array(
                name, shape=(n_days,), chunks=(1,), dtype=dtype, fill_value=fill,
                dimension_names=("day",),
            )
            for name, (dtype, fill) in DAY_VARS.items()
        }
        day = group.create_array(
            "day", shape=(n_days,), chunks=(n_days,), dtype="int64", fill_value=0,
            dimension_names=("day",), attributes={"units": f"days since {year:04d}-01-01"},
        )
        day[:] = np.arange(n_days)
        start = int(np.datetime64(f"{year:04d}-01-01", "ns").astype(np.int64))
        columns = {
            name: np.full(n_days, fill, dtype=object if dtype == "str" else dtype)
            for name, (dtype, fill) in DAY_VARS.items()
        }
        for rec in recs:
            d = (rec.day_ns - start) // NS_PER_DAY
            if rec.n_samples:
                row = handle.read(rec.day_ns, 0, spd)
                valid = np.zeros(spd, bool)
                for a, b in rec.runs:
                    valid[a:b] = True
                data[d, :] = row
                mask[d, :] = valid
            values = {
                "starttime": rec.starttime_ns,
                "n_samples": rec.n_samples,
                "flags": rec.flags,
                "segments": json.dumps(rec.segments, sort_keys=True),
                "quarantine": json.dumps(rec.quarantine, sort_keys=True),
                "sources": json.dumps(rec.sources, sort_keys=True),
                "ingested_at": rec.ingested_at_ns,
            }
            for name, value in values.items():
                columns[name][d] = value
        for name, values in columns.items():
            arrays[name][:] = values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in TABLE_KEYS:
            if not part_names(src, name) or name == "windows":
                continue
            table = read_table(src, name)
            ds = xr.Dataset({c: ("row", table[c].to_numpy()) for c in table.columns})
            ds.attrs.update({"key": list(TABLE_KEYS[name]), "columns": list(table.columns)})
            ds.to_zarr(dest, group=f"tables/{name}", mode="w", consolidated=False, zarr_format=3)
    for name in WINDOW_GROUPS:
        if name not in new:
            continue
        src_group = new[name]
        assert isinstance(src_group, zarr.Group)
        group = old.require_group(name)
        group.attrs.update({**dict(src_group.attrs), "seismoflow_schema": 2})
        done = written_traces(src, src_group)
        for arr_name, arr in src_group.arrays():
            kind = str(arr.metadata.to_dict().get("data_type"))
            per_trace = arr_name in ("flags", "written_at")
            out = group.create_array(
                arr_name,
                shape=arr.shape,
                chunks=(1,) if per_trace else arr.chunks,
                dtype="str" if kind == "string" else arr.dtype,
                fill_value=arr.fill_value,
                dimension_names=arr.metadata.to_dict().get("dimension_names"),
                attributes=dict(arr.attrs),
            )
            if not arr.size:
                continue
            if per_trace:
                values = np.asarray(arr[:]).copy()
                for t, (flags, when) in done.items():
                    values[t] = flags if arr_name == "flags" else when
                out[:] = values
            else:
                out[...] = arr[...]
    for path in ("features", "predictions", "sources"):
        if path in new:
            src_group = new[path]
            assert isinstance(src_group, zarr.Group)
            _copy(src_group, old.require_group(path))
