"""A store opened for reading from Python (``seismoflow.open_store``).

Waveforms come back as ObsPy streams with the signature of ObsPy's SDS and FDSN clients
(wildcards ``*`` and ``?`` in the codes), tables as pandas DataFrames, windows and
predictions as xarray Datasets. Nothing here writes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import cached_property
from typing import Any

import obspy
import pandas as pd
import xarray as xr

from seismoflow.errors import BadInputError, StoreError
from seismoflow.ids import ChannelId
from seismoflow.inspect import export_event, read_channel_pieces, store_info
from seismoflow.storage.location import node_location, open_root, store_exists
from seismoflow.storage.predictions import open_predictions
from seismoflow.storage.schema import EVENTS, NOISE_GROUP
from seismoflow.storage.tables import read_table
from seismoflow.times import to_ns

WINDOW_GROUPS = (EVENTS, NOISE_GROUP)


@dataclass(frozen=True)
class Store:
    """A seismoflow store at ``location`` (a path or fsspec URL). Its channel list is read
    once: open the store again to see channels a later run added."""

    location: str

    @classmethod
    def open(cls, location: str) -> Store:
        if not store_exists(location):
            raise StoreError(
                f"no seismoflow store at {location}; check the path, or make one with "
                "`seismoflow ingest` or `seismoflow fetch`"
            )
        return cls(location)

    def info(self) -> dict[str, Any]:
        """Counts: events, stations, channels, channel-days, samples, quarantine, flags."""
        return store_info(self.location)

    @property
    def catalog(self) -> pd.DataFrame:
        """The catalogue: one row per event (``event_id``, origin, magnitude, ``event_type``)."""
        return read_table(self.location, "catalog")

    @property
    def channels(self) -> pd.DataFrame:
        """The station inventory as a table: one row per channel epoch, with coordinates."""
        return read_table(self.location, "channels")

    @property
    def quarantine(self) -> pd.DataFrame:
        """Input that was not stored, with the reason."""
        return read_table(self.location, "quarantine")

    def get_waveforms(
        self,
        network: str,
        station: str,
        location: str,
        channel: str,
        starttime: obspy.UTCDateTime | str,
        endtime: obspy.UTCDateTime | str,
    ) -> obspy.Stream:
        """Stored samples (raw counts, native rate) of the channels matching the codes (``*``
        and ``?`` allowed, as in ObsPy's clients) between ``starttime`` and ``endtime``; one
        trace per stretch without gaps."""
        t0, t1 = to_ns(starttime), to_ns(endtime)
        if t1 <= t0:
            raise BadInputError(f"endtime {endtime} must be after starttime {starttime}")
        pattern = (network, station, location, channel)
        stream = obspy.Stream()
        for name in self._continuous_channels:
            ch = ChannelId.parse(name)
            codes = (ch.network, ch.station, ch.location, ch.channel)
            if all(fnmatchcase(c, p) for c, p in zip(codes, pattern, strict=True)):
                stream += read_channel_pieces(self.location, ch, t0, t1)
        return stream

    def event_waveforms(self, event_id: str) -> obspy.Stream:
        """Native-rate samples of every channel with a window of ``event_id``."""
        return export_event(self.location, event_id)

    def windows(self, group: str = EVENTS) -> xr.Dataset:
        """Event windows (``events``) or noise windows (``noise``) as a lazy Dataset: traces x
        components x samples at the window rate, with their coordinates."""
        if group not in WINDOW_GROUPS:
            raise BadInputError(f"window group {group!r} is not one of {list(WINDOW_GROUPS)}")
        if group not in open_root(self.location, mode="r"):
            raise StoreError(f"{self.location} has no {group} windows")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return xr.open_zarr(node_location(self.location, group), consolidated=False)

    def predictions(self, version: str | None = "latest") -> xr.Dataset:
        """One prediction version (the latest by default) with its provenance attributes."""
        return open_predictions(self.location, None if version in (None, "latest") else version)

    @cached_property
    def _continuous_channels(self) -> list[str]:
        """The stored channels, listed once per opened store: zarr reads every member's
        document to list a group (~100 ms a channel on object storage), and a notebook
        calls ``get_waveforms`` many times."""
        group = open_root(self.location, mode="r").get("continuous")
        return sorted(group.group_keys()) if group is not None else []  # type: ignore[union-attr]
