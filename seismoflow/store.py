"""A store opened for reading from Python (``seismoflow.open_store``), in the style of
ObsPy's clients. Nothing here writes.

- Waveforms: :meth:`Store.get_waveforms` returns an ``obspy.Stream`` with the signature of
  ObsPy's SDS and FDSN clients (wildcards ``*`` and ``?`` in the codes);
  :meth:`Store.get_dataarray` gives one channel on a regular time axis as an
  ``xarray.DataArray`` (NaN in gaps).
- Events and stations: :attr:`Store.catalog` and :attr:`Store.channels` are the store's
  tables as pandas DataFrames; :meth:`Store.get_events` (an ``obspy.Catalog``) and
  :attr:`Store.inventory` (an ``obspy.Inventory``) are parsed from the QuakeML and StationXML
  documents the store keeps byte for byte.
- Results: :meth:`Store.windows` and :meth:`Store.predictions` are xarray Datasets.

Example::

    import seismoflow

    store = seismoflow.open_store("archive.zarr")
    st = store.get_waveforms("UW", "*", "*", "EH?", "2020-04-12T10:00", "2020-04-12T10:10")
    trace = store.get_dataarray("UW.RCS..EHZ", "2020-04-12T10:00", "2020-04-12T10:10")
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import warnings
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Literal, TypeAlias

import numpy as np
import obspy
import pandas as pd
import xarray as xr

from seismoflow.errors import BadInputError, StoreError
from seismoflow.ids import ChannelId
from seismoflow.inspect import export_event, pieces_to_stream, store_info
from seismoflow.storage.continuous import ContinuousReader
from seismoflow.storage.location import node_location, open_root, store_exists
from seismoflow.storage.predictions import open_predictions
from seismoflow.storage.schema import EVENTS, NOISE_GROUP, SOURCES
from seismoflow.storage.tables import read_source_document, read_table
from seismoflow.times import NS_PER_DAY, NS_PER_S, from_ns, parse_ns, rate_fraction

WINDOW_GROUPS = (EVENTS, NOISE_GROUP)
# A UTC time: ObsPy's, a datetime, or ISO 8601 text ("2020-04-12T19:30").
TimeLike: TypeAlias = obspy.UTCDateTime | dt.datetime | str
# A piece whose first sample lies within this of the time axis is on it (ObsPy and miniSEED
# times carry microseconds; see storage.continuous.TIME_TOLERANCE_NS).
ON_GRID_NS = 1_000
# get_dataarray builds the whole array in memory: about 2 GB of float64 at most.
MAX_ARRAY_SAMPLES = 1 << 28


@dataclass(frozen=True)
class Store:
    """A seismoflow store at ``location`` (a path or fsspec URL), opened read-only."""

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

    # --- tables ----------------------------------------------------------------------------

    @property
    def catalog(self) -> pd.DataFrame:
        """The catalogue as a DataFrame: one row per event (``event_id``, origin time in ns,
        latitude, longitude, depth, magnitude, ``event_type``). For ObsPy ``Event`` objects
        (picks, all origins and magnitudes) use :meth:`get_events`."""
        return read_table(self.location, "catalog")

    @property
    def channels(self) -> pd.DataFrame:
        """The station inventory as a DataFrame: one row per channel epoch, with coordinates.
        For the full ObsPy ``Inventory`` (responses included) use :attr:`inventory`."""
        return read_table(self.location, "channels")

    @property
    def quarantine(self) -> pd.DataFrame:
        """Input that was not stored, with the reason."""
        return read_table(self.location, "quarantine")

    # --- source documents ------------------------------------------------------------------

    def get_events(self) -> obspy.Catalog:
        """The catalogue's events as an ``obspy.Catalog``, parsed from the QuakeML documents
        kept in the store: the events whose ``resource_id`` is an ``event_id`` of
        :attr:`catalog` (a QuakeML file may hold events outside the ingested time range).

        >>> cat = store.get_events()                        # doctest: +SKIP
        >>> cat[0].preferred_origin().time                  # doctest: +SKIP
        """
        wanted = set(self.catalog["event_id"].astype(str))
        events: dict[str, Any] = {}
        for content in self._documents("quakeml"):
            for event in obspy.read_events(io.BytesIO(content)):
                event_id = str(event.resource_id.id)
                if event_id in wanted:
                    events.setdefault(event_id, event)
        return obspy.Catalog(events=list(events.values()))

    @property
    def inventory(self) -> obspy.Inventory:
        """Every StationXML document kept in the store, as one ``obspy.Inventory``
        (responses included), parsed on each access (seconds for a large network: keep the
        result). Select from it as in ObsPy::

            store.inventory.select(network="UW", channel="EH?")
        """
        documents = [
            obspy.read_inventory(io.BytesIO(content), format="STATIONXML")
            for content in self._documents("stationxml")
        ]
        inventory = documents[0] if documents else obspy.Inventory(networks=[], source="")
        for other in documents[1:]:
            inventory += other
        return inventory

    def get_stations(
        self, network: str = "*", station: str = "*", location: str = "*", channel: str = "*"
    ) -> obspy.Inventory:
        """:attr:`inventory` restricted to the codes (``*`` and ``?`` allowed), as
        ``obspy.clients.fdsn.Client.get_stations`` at ``level="response"``."""
        return self.inventory.select(
            network=network, station=station, location=location, channel=channel
        )

    def _documents(self, kind: str) -> list[bytes]:
        """Contents of the source documents of ``kind`` (``stationxml``, ``quakeml``),
        decompressed if they were stored gzipped."""
        root = open_root(self.location, mode="r")
        group = root.get(SOURCES)
        if group is None:
            return []
        out = []
        for name in sorted(group.array_keys()):  # type: ignore[union-attr]
            if name.startswith(f"{kind}_"):
                content = read_source_document(root, f"{SOURCES}/{name}")
                out.append(gzip.decompress(content) if content[:2] == b"\x1f\x8b" else content)
        return out

    # --- waveforms -------------------------------------------------------------------------

    def get_waveforms(
        self,
        network: str,
        station: str,
        location: str,
        channel: str,
        starttime: TimeLike,
        endtime: TimeLike,
    ) -> obspy.Stream:
        """Stored samples (raw counts, int32, native rate) of the channels matching the codes
        (``*`` and ``?`` allowed, as in ObsPy's clients) with times in ``[starttime,
        endtime]``; one trace per stretch without gaps, with the source's exact start times.

        >>> st = store.get_waveforms("UW", "RCS", "", "EH?",     # doctest: +SKIP
        ...                          "2021-03-03T00:00", "2021-03-03T01:00")
        """
        t0, t1 = _range(starttime, endtime)
        pattern = (network, station, location, channel)
        reader = self._reader()
        stream = obspy.Stream()
        for ch in self._stored_channels(t0, t1):
            codes = (ch.network, ch.station, ch.location, ch.channel)
            if all(fnmatchcase(c, p) for c, p in zip(codes, pattern, strict=True)):
                stream += pieces_to_stream(reader.pieces(ch, t0, t1))
        return stream

    def get_dataarray(
        self,
        seed_id: str,
        starttime: TimeLike,
        endtime: TimeLike,
        off_grid: Literal["nearest", "drop", "raise"] = "nearest",
    ) -> xr.DataArray:
        """One channel (``NET.STA.LOC.CHA``, no wildcards) over ``[starttime, endtime]`` on a
        regular time axis: a float64 DataArray of raw counts over ``time`` (datetime64[ns],
        UTC) at the channel's sampling rate, NaN where nothing was recorded.

        The axis is the sample grid of the first stored sample in the range, extended to cover
        the whole range; a recorded sample sits exactly at its time (to 1 us). A stretch that
        starts off that grid (the source's clock moved the phase: a later segment, another
        day's record) is handled by ``off_grid``: ``"nearest"`` (default) places its samples
        at the nearest axis times, shifting them by less than half a sample; ``"drop"`` leaves
        NaN instead; ``"raise"`` refuses. ``attrs["shifted_pieces"]`` and
        ``attrs["max_shift_ns"]`` say what was moved (or dropped). Without stored samples the
        axis starts at ``starttime``. Values are the stored samples exactly (int32 counts are
        exact in float64); use :meth:`get_waveforms` for the exact times of every stretch.

        >>> da = store.get_dataarray("GR.FUR..BHN",              # doctest: +SKIP
        ...                          "2015-12-27T23:50", "2015-12-28T00:10")
        >>> da.sel(time="2015-12-28T00:00").item()              # doctest: +SKIP
        """
        t0, t1 = _range(starttime, endtime)
        ch = ChannelId.parse(seed_id)
        pieces = self._reader().pieces(ch, t0, t1)
        rates = {p.sampling_rate for p in pieces} or {self._sampling_rate(ch, t0, t1)}
        if len(rates) > 1:
            raise BadInputError(
                f"{seed_id} changes sampling rate between {from_ns(t0)} and {from_ns(t1)} "
                f"({sorted(rates)} Hz); ask for one rate's range, or use get_waveforms"
            )
        rate = rates.pop()
        anchor = pieces[0].start_ns if pieces else t0
        first = _ceil_index(t0 - ON_GRID_NS - anchor, rate)
        last = _floor_index(t1 + ON_GRID_NS - anchor, rate)
        n = max(0, last - first + 1)
        if n > MAX_ARRAY_SAMPLES:
            raise BadInputError(
                f"{seed_id} from {from_ns(t0)} to {from_ns(t1)} is {n:,} samples; ask for at "
                f"most {MAX_ARRAY_SAMPLES:,} at a time (get_waveforms streams any range)"
            )
        values = np.full(n, np.nan)
        shifted, max_shift = 0, 0
        for p in pieces:
            index, shift = _nearest_index(p.start_ns - anchor, rate)
            if abs(shift) > ON_GRID_NS:
                if off_grid == "raise":
                    raise BadInputError(
                        f"{seed_id}: samples from {from_ns(p.start_ns)} are {shift} ns off the "
                        "time axis; use off_grid='nearest' or 'drop', or get_waveforms"
                    )
                shifted += 1
                max_shift = max(max_shift, abs(shift))
                if off_grid == "drop":
                    continue
            lo = index - first
            a, b = max(lo, 0), min(lo + p.data.size, n)
            if b > a:
                values[a:b] = p.data[a - lo : b - lo]
        times = anchor + _offsets_ns(np.arange(first, first + n), rate)
        return xr.DataArray(
            values,
            dims=("time",),
            coords={"time": times.astype("datetime64[ns]")},
            name=ch.nslc,
            attrs={
                "network": ch.network,
                "station": ch.station,
                "location": ch.location,
                "channel": ch.channel,
                "sampling_rate": float(rate),
                "units": "counts",
                "off_grid": off_grid,
                "shifted_pieces": shifted,
                "max_shift_ns": max_shift,
            },
        )

    def event_waveforms(self, event_id: str) -> obspy.Stream:
        """Native-rate samples of every channel with a window of ``event_id``."""
        return export_event(self.location, event_id)

    # --- results ---------------------------------------------------------------------------

    def windows(self, group: str = EVENTS) -> xr.Dataset:
        """Event windows (``"events"``) or noise windows (``"noise"``) as a Dataset:
        ``waveform`` (trace x component x sample, float32 counts at the window rate, NaN
        without data; lazy, read on use) with per-trace coordinates loaded (event, station,
        window start, flags).

        >>> ds = store.windows("events")                        # doctest: +SKIP
        >>> quakes = ds.where(ds.event_type == "earthquake", drop=True)   # doctest: +SKIP
        """
        if group not in WINDOW_GROUPS:
            raise BadInputError(f"window group {group!r} is not one of {list(WINDOW_GROUPS)}")
        if group not in open_root(self.location, mode="r"):
            raise StoreError(
                f"{self.location} has no {group} windows; `seismoflow ingest` with a QuakeML "
                "catalogue cuts event windows, `seismoflow features` draws noise windows"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = xr.open_zarr(node_location(self.location, group), consolidated=False)
        # The 1-D per-trace values are small: loaded, they select traces directly
        # (``where(..., drop=True)`` refuses a lazy boolean index); waveforms stay lazy.
        small = [name for name, v in ds.variables.items() if v.ndim == 1]
        return ds.assign_coords({name: ds[name].load() for name in small if name in ds.coords})

    def predictions(self, version: str | None = "latest") -> xr.Dataset:
        """One prediction version (``"latest"``, the default, or a version id) as a Dataset
        with its provenance (model, code version) in ``attrs``."""
        return open_predictions(self.location, None if version in (None, "latest") else version)

    # --- helpers ---------------------------------------------------------------------------

    def _reader(self) -> ContinuousReader:
        return ContinuousReader(open_root(self.location, mode="r"))

    def _channel_days(self) -> pd.DataFrame:
        days = read_table(self.location, "channel_days")
        if not len(days):
            return days
        return days[days["n_samples"].astype("int64") > 0]

    def _stored_channels(self, start_ns: int, end_ns: int) -> list[ChannelId]:
        """Channels with stored samples on a day that meets ``[start_ns, end_ns]``."""
        days = self._channel_days()
        if not len(days):
            return []
        day = days["day_ns"].astype("int64")
        near = days[(day <= end_ns) & (day + NS_PER_DAY > start_ns)]
        return [ChannelId.parse(c) for c in sorted(set(near["channel"].astype(str)))]

    def _sampling_rate(self, ch: ChannelId, start_ns: int, end_ns: int) -> float:
        """The channel's rate for an axis without samples: its nearest stored day's, else
        the StationXML's."""
        days = self._channel_days()
        mine = days[days["channel"].astype(str) == ch.nslc] if len(days) else days
        if len(mine):
            distance = (mine["day_ns"].astype("int64") - start_ns).abs()
            return float(mine.loc[distance.idxmin(), "sampling_rate"])
        epochs = self.channels
        codes = {"network": ch.network, "station": ch.station, "location": ch.location}
        for col, code in {**codes, "channel": ch.channel}.items():
            epochs = epochs[epochs[col].astype(str) == code] if len(epochs) else epochs
        if len(epochs):
            return float(epochs["sampling_rate"].iloc[-1])
        raise BadInputError(
            f"{ch.nslc} has no stored samples and no StationXML epoch in {self.location}; "
            "check the codes (Store.info(), Store.channels)"
        )


def _range(starttime: TimeLike, endtime: TimeLike) -> tuple[int, int]:
    t0, t1 = parse_ns(starttime, "starttime"), parse_ns(endtime, "endtime")
    if t1 <= t0:
        raise BadInputError(f"endtime {endtime} must be after starttime {starttime}")
    return t0, t1


def _ceil_index(offset_ns: int, rate: float) -> int:
    """Smallest sample index at or after ``offset_ns`` (exact integer arithmetic)."""
    fr = rate_fraction(rate)
    return -((-offset_ns * fr.numerator) // (NS_PER_S * fr.denominator))


def _floor_index(offset_ns: int, rate: float) -> int:
    fr = rate_fraction(rate)
    return (offset_ns * fr.numerator) // (NS_PER_S * fr.denominator)


def _nearest_index(offset_ns: int, rate: float) -> tuple[int, int]:
    """Nearest sample index of ``offset_ns``, and how far (ns) the offset is from it."""
    fr = rate_fraction(rate)
    index = (2 * offset_ns * fr.numerator + NS_PER_S * fr.denominator) // (
        2 * NS_PER_S * fr.denominator
    )
    return index, offset_ns - int(_offsets_ns(np.array([index]), rate)[0])


def _offsets_ns(indices: np.ndarray, rate: float) -> np.ndarray:
    """Times (ns after the anchor) of sample ``indices``, rounded to the nearest ns, exact
    for any number of samples (no float accumulation)."""
    fr = rate_fraction(rate)
    num, den = fr.numerator, fr.denominator
    # index * 1e9 * den / num in two int64-safe steps: whole periods, then the remainder.
    scaled = indices.astype(np.int64) * den
    whole, rest = np.divmod(scaled, num)
    return whole * NS_PER_S + (2 * rest * NS_PER_S + num) // (2 * num)
