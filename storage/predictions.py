"""Prediction runs written back into the store (layout in :mod:`storage.schema`).

Each run is a new version ``predictions/{version}``; the group ``predictions`` names the
latest complete one (attribute ``latest``) and lists all (``versions``). A run that dies
part-way leaves its version with ``status = writing``: readers skip it and ``latest`` still
points at the previous complete run.

Read the latest with xarray::

    latest = xr.open_zarr(store, group="predictions").attrs["latest"]
    ds = xr.open_zarr(store, group=f"predictions/{latest}")
"""

from __future__ import annotations

import datetime as dt
import uuid
import warnings
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import numpy as np
import xarray as xr
import zarr
from seismoflow.storage.location import consolidate, node_location, open_root, store_lock
from seismoflow.storage.schema import (
    PREDICTIONS,
    SchemaError,
    check_prediction_values,
    create_prediction_version,
    prediction_path,
)

from seismoflow.errors import StoreError


def new_version_id(now: dt.datetime | None = None) -> str:
    """``YYYYmmddTHHMMSSZ-{8 hex}``: sorts by time, unique across concurrent runs."""
    now = now or dt.datetime.now(dt.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


class PredictionWriter:
    """Context manager writing one prediction version.

    On entry the version's arrays are created (under the store lock); ``write`` fills whole
    variables; on a clean exit the version is marked complete, becomes ``latest`` and the
    store's consolidated metadata is rewritten. On an error the version stays ``writing``.
    """

    def __init__(
        self,
        location: str,
        n_traces: int,
        n_events: int,
        classes: Sequence[str],
        models: Sequence[str],
        attrs: Mapping[str, Any],
        version: str | None = None,
    ) -> None:
        self.location = location
        self.version = version or new_version_id()
        self._shape = (n_traces, n_events, list(classes), list(models), dict(attrs))
        self._group: zarr.Group | None = None
        self._written: set[str] = set()

    def __enter__(self) -> PredictionWriter:
        n_traces, n_events, classes, models, attrs = self._shape
        with store_lock(self.location):
            root = open_root(self.location)
            self._group = create_prediction_version(
                root, self.version, n_traces, n_events, classes, models, attrs
            )
        self.write("class", np.asarray(classes, dtype=object))
        return self

    def write(self, name: str, values: np.ndarray | Sequence[Any]) -> None:
        """Write a whole variable, checked against the schema (shape, dtype)."""
        if self._group is None:
            raise SchemaError("PredictionWriter.write outside its `with` block")
        arr = self._group[name]
        assert isinstance(arr, zarr.Array)
        arr[...] = check_prediction_values(self._group, name, np.asarray(values))
        self._written.add(name)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None or self._group is None:
            return
        with store_lock(self.location):
            root = open_root(self.location)
            group = root[prediction_path(self.version)]
            group.attrs["status"] = "complete"
            parent = root[PREDICTIONS]
            versions = _versions(parent.attrs.get("versions"))
            parent.attrs.update({"versions": [*versions, self.version], "latest": self.version})
            consolidate(self.location)


def list_versions(location: str) -> list[str]:
    """Complete prediction versions, oldest first."""
    root = open_root(location, mode="r")
    if PREDICTIONS not in root:
        return []
    return _versions(root[PREDICTIONS].attrs.get("versions"))


def _versions(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def latest_version(location: str) -> str:
    """The latest complete prediction version; a clear error if there is none."""
    root = open_root(location, mode="r")
    latest = root[PREDICTIONS].attrs.get("latest") if PREDICTIONS in root else None
    if not latest:
        raise StoreError(
            f"{location} holds no predictions; run `seismoflow predict --store {location} "
            "--model DIR` first"
        )
    return str(latest)


def open_predictions(location: str, version: str | None = None) -> xr.Dataset:
    """One prediction version (the latest by default) as an xarray Dataset."""
    version = version or latest_version(location)
    if version not in list_versions(location):
        raise StoreError(
            f"prediction version {version!r} is not a complete version of {location}; "
            f"versions: {list_versions(location)}"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return xr.open_zarr(node_location(location, prediction_path(version)), consolidated=False)
