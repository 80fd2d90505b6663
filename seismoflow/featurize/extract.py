"""Feature extraction over a store's windows with dask, and reading the features back.

The waveform of ``events/`` or ``noise/`` is opened lazily with xarray (dask), grouped into
blocks of traces, and :func:`seismoflow.featurize.physics.window_features` runs on each
block (``dask.array.blockwise``), on a local thread pool or on a dask cluster: never one
Python loop over traces in one process. The (trace x feature) result is small and is
written whole through ``storage.schema.write_features``, tagged with the feature set
(``physics.FEATURE_SET``); :func:`read_features` refuses a table of another feature set, so
a store extracted by older code is re-extracted, never mixed with new values.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
import zarr

from seismoflow import __version__
from seismoflow.errors import StoreError
from seismoflow.examples import list_examples
from seismoflow.featurize.arrivals import travel_times
from seismoflow.featurize.physics import FEATURE_SET, FEATURES, window_features
from seismoflow.storage.location import node_location, open_root, store_lock
from seismoflow.storage.schema import EVENTS, NOISE_GROUP, features_path, write_features
from seismoflow.storage.tables import read_table

WINDOW_GROUPS: tuple[str, ...] = (EVENTS, NOISE_GROUP)


def _open_windows(location: str, group: str, block_traces: int) -> xr.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return xr.open_zarr(
            node_location(location, group), consolidated=False, chunks={"trace": block_traces}
        )


def arrival_offsets(location: str, ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Predicted P and S times (s after each window's reference time); NaN if unknown."""
    n = ds.sizes["trace"]
    if n == 0 or "distance_deg" not in ds:
        return np.full(n, np.nan), np.full(n, np.nan)
    catalog = read_table(location, "catalog")
    depth = np.full(n, np.nan)
    if len(catalog):
        by_id = dict(zip(catalog["event_id"], catalog["depth_km"].astype(float), strict=True))
        depth = np.array([by_id.get(str(e), np.nan) for e in ds["event_id"].values], dtype=float)
    tp, ts = travel_times(ds["distance_deg"].values, depth)
    origin = ds["origin_time"].values.astype("datetime64[ns]").astype(np.int64)
    reference = ds["reference_time"].values.astype("datetime64[ns]").astype(np.int64)
    offset = np.where(origin == np.iinfo(np.int64).min, np.nan, (origin - reference) / 1e9)
    return tp + offset, ts + offset


def _block(
    wave: np.ndarray, tp: np.ndarray, ts: np.ndarray, rate: float, pre_s: float
) -> np.ndarray:
    return window_features(wave, rate, pre_s, tp, ts)


def feature_graph(location: str, group: str, block_traces: int = 64) -> da.Array:
    """The lazy (trace x feature) array of one window group."""
    ds = _open_windows(location, group, block_traces)
    wave = ds["waveform"].data
    if not isinstance(wave, da.Array):
        wave = da.from_array(wave, chunks=(block_traces, -1, -1))
    wave = wave.rechunk({0: block_traces, 1: -1, 2: -1})
    tp, ts = arrival_offsets(location, ds)
    chunks = wave.chunks[0]
    return da.blockwise(
        _block,
        "if",
        wave,
        "icj",
        da.from_array(tp, chunks=(chunks,)),
        "i",
        da.from_array(ts, chunks=(chunks,)),
        "i",
        new_axes={"f": len(FEATURES)},
        concatenate=True,
        dtype=np.float32,
        rate=float(ds.attrs["sampling_rate"]),
        pre_s=float(ds.attrs["pre_s"]),
        meta=np.empty((0, 0), dtype=np.float32),
    )


def compute_features(
    location: str, group: str, block_traces: int = 64, dask_address: str | None = None
) -> np.ndarray:
    """Features of every window of ``group``: ``(n_traces, len(FEATURES))`` float32."""
    graph = feature_graph(location, group, block_traces)
    if graph.shape[0] == 0:
        return np.zeros((0, len(FEATURES)), dtype=np.float32)
    if dask_address:
        from distributed import Client

        with Client(dask_address) as client:
            return np.asarray(client.compute(graph).result())
    return np.asarray(graph.compute(scheduler="threads"))


def extract_features(
    location: str,
    block_traces: int = 64,
    dask_address: str | None = None,
    flow_run_id: str | None = None,
    groups: tuple[str, ...] = WINDOW_GROUPS,
) -> dict[str, Any]:
    """Compute and write ``features/{events,noise}`` for the window groups the store has.

    Idempotent: each run rewrites the tables with the same values. Returns counts.
    """
    root = open_root(location, mode="r")
    summary: dict[str, Any] = {}
    for group in groups:
        node = root.get(group)
        if not isinstance(node, zarr.Group) or "waveform" not in node:
            continue
        clock = time.perf_counter()
        values = compute_features(location, group, block_traces, dask_address)
        seconds = time.perf_counter() - clock
        attrs = {
            "code_version": __version__,
            "flow_run_id": flow_run_id or "",
            "computed_at": str(np.datetime64(time.time_ns(), "ns")) + "Z",
            "feature_set": FEATURE_SET,
            "dask_address": dask_address or "local threads",
        }
        with store_lock(location):
            write_features(
                open_root(location),
                group,
                values,
                [f.name for f in FEATURES],
                [f.unit for f in FEATURES],
                [f.description for f in FEATURES],
                attrs,
            )
        present = np.isfinite(values).any(axis=1)
        summary[group] = {
            "traces": int(values.shape[0]),
            "traces_with_features": int(present.sum()),
            "seconds": round(seconds, 2),
            "traces_per_s": round(values.shape[0] / seconds, 1) if seconds > 0 else None,
        }
    return summary


class StaleFeaturesError(StoreError, ValueError):
    """The store's features were computed by another feature set than this code's."""


def read_features(location: str, examples: pd.DataFrame | None = None) -> pd.DataFrame:
    """Features aligned with :func:`seismoflow.examples.list_examples` rows: same order,
    with ``group`` and ``trace`` keys, then one column per feature (NaN where a window has
    no features yet). Units are in ``df.attrs['units']``.

    Raises :class:`StaleFeaturesError` when a group's table was written with another
    ``feature_set`` than :data:`~seismoflow.featurize.physics.FEATURE_SET` (run
    ``seismoflow features`` again)."""
    if examples is None:
        examples = list_examples(location)
    names = [f.name for f in FEATURES]
    out = np.full((len(examples), len(names)), np.nan, dtype=np.float32)
    root = open_root(location, mode="r")
    for group in WINDOW_GROUPS:
        path = features_path(group)
        node = root.get(f"{path}/values")
        rows = np.flatnonzero(examples["group"].to_numpy() == group)
        if not isinstance(node, zarr.Array) or not len(rows):
            continue
        found = root[path].attrs.get("feature_set")
        if found != FEATURE_SET:
            raise StaleFeaturesError(
                f"{location}: features/{group} were computed as feature set {found!r}, this "
                f"code computes {FEATURE_SET!r}; run `seismoflow features --store {location}`"
            )
        stored = [str(x) for x in np.asarray(root[f"{path}/feature"][:]).tolist()]  # type: ignore[index]
        values = np.asarray(node[:])
        traces = examples["trace"].to_numpy()[rows]
        ok = traces < values.shape[0]
        cols = [stored.index(n) if n in stored else -1 for n in names]
        for j, c in enumerate(cols):
            if c >= 0:
                out[rows[ok], j] = values[traces[ok], c]
    df = pd.DataFrame(out, columns=names)
    df.insert(0, "trace", examples["trace"].to_numpy())
    df.insert(0, "group", examples["group"].to_numpy())
    df.attrs["units"] = {f.name: f.unit for f in FEATURES}
    return df


def features_missing(location: str) -> list[str]:
    """Window groups of the store whose feature table is absent, incomplete or shorter
    than the group (windows added since features were computed)."""
    root = open_root(location, mode="r")
    missing = []
    for group in (EVENTS, NOISE_GROUP):
        keys = root.get(f"{group}/trace_key")
        if not isinstance(keys, zarr.Array) or keys.shape[0] == 0:
            continue
        table = root.get(features_path(group))
        values = root.get(f"{features_path(group)}/values")
        if (
            not isinstance(table, zarr.Group)
            or table.attrs.get("status") != "complete"
            or not isinstance(values, zarr.Array)
            or values.shape[0] != keys.shape[0]
        ):
            missing.append(group)
    return missing


def require_features(location: str) -> None:
    """Refuse a store whose windows lack features, naming the command that computes them
    (training and prediction read them; ``seismoflow run`` computes them when missing)."""
    missing = features_missing(location)
    if missing:
        raise StoreError(
            f"{location} has no features for {', '.join(missing)}: run "
            f"`seismoflow features --store {location}` first (or `seismoflow run`, which "
            "computes them when they are missing)"
        )
