"""The store's layout, written down once. Every writer goes through this module.

Layout (``STORE.md`` documents it for users)::

    /                                   attrs: seismoflow_schema, created_by
    continuous/{NET.STA.LOC.CHA}/{YEAR} one dataset per channel-year, native sampling rate
        data        (day, sample)  int32  counts, lossless codec (setting ``codec``)
        mask        (day, sample)  bool   True where a sample was recorded (gaps are False)
        starttime   (day)          time   time of sample 0 of that day's grid
        n_samples   (day)          int64  recorded samples that day
        flags       (day)          uint32 quality flags (:class:`Flag`)
        segments    (day)          str    JSON list of source segments with exact start times
        quarantine  (day)          str    JSON list of rejected pieces with reasons
        source_digest (day)        str    digest of the source files the day was built from
        ingested_at (day)          time   completion ledger: NaT until the day is complete
    events/                             event windows at one common sampling rate
        waveform    (trace, component, sample) float32, NaN where no data
        + per-trace coordinates (event, station, geometry, times, label) and written_at
    tables/{catalog,channels,channel_days,quarantine}  tables as 1-D datasets
    sources/{stationxml,quakeml}_{sha256[:16]}         source documents, verbatim bytes

Chunks never straddle a work unit (a channel-day or a trace), so units write disjoint
regions and concurrent runs cannot corrupt each other's chunks.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, PCodec, ZstdCodec
from zarr.codecs.numcodecs import Delta

from seismoflow.ids import ChannelId
from seismoflow.times import NAT, NS_PER_DAY, samples_per_day

SCHEMA_VERSION = 1
CONTINUOUS = "continuous"
EVENTS = "events"
TABLES = "tables"
SOURCES = "sources"
COMPONENTS: tuple[str, ...] = ("Z", "N", "E")
TIME_ATTRS: dict[str, str] = {
    "units": "nanoseconds since 1970-01-01",
    "calendar": "proleptic_gregorian",
}
INTEGER_CODECS = ("pcodec", "delta-zstd")


class SchemaError(ValueError):
    """A write that does not fit the store's schema (shape, dtype, alignment, settings)."""


class Flag(enum.IntFlag):
    """Quality flags of a channel-day (``continuous``) or an event-window trace (``events``)."""

    GAPS = 1  # missing samples between recorded segments
    OVERLAP_IDENTICAL = 2  # overlapping segments agree sample for sample
    OVERLAP_CONFLICT = 4  # overlapping segments disagree; later piece quarantined
    MIXED_RATES = 8  # segments at another sampling rate; those quarantined
    RATE_MISMATCH_METADATA = 16  # data rate differs from the StationXML channel epoch
    FLAT = 32  # every sample equal (dead channel)
    CLIPPED = 64  # a share of samples sits at the extreme values
    NO_METADATA = 128  # no StationXML channel epoch covers the data
    TIMING_SHIFT = 256  # a segment start is off the day's sample grid (residual kept)
    MISSING_COMPONENTS = 512  # event window lacks one or more of Z, N, E
    PARTIAL_WINDOW = 1024  # event window has samples without data (NaN)
    CORRUPT_RECORDS = 2048  # part of a source file could not be decoded
    NO_COORDINATES = 4096  # station coordinates unknown (distance, P arrival unknown)


def describe_flags(value: int) -> list[str]:
    return [f.name.lower() for f in Flag if f.name and value & f]


def integer_codec_kwargs(codec: str, level: int) -> dict[str, Any]:
    """Codec pipeline for int32 counts. Chosen by measurement (``bench/codecs.py``)."""
    if codec == "pcodec":
        return {"serializer": PCodec(level=level), "compressors": None, "filters": None}
    if codec == "delta-zstd":
        return {
            "filters": [Delta(dtype="int32")],
            "compressors": [BloscCodec(cname="zstd", clevel=min(level, 9), shuffle="bitshuffle")],
        }
    raise SchemaError(f"unknown codec {codec!r}; choose one of {INTEGER_CODECS}")


def continuous_path(channel: ChannelId, year: int) -> str:
    return f"{CONTINUOUS}/{channel.nslc}/{year:04d}"


def days_in_year(year: int) -> int:
    return 366 if (year % 4 == 0 and year % 100 != 0) or year % 400 == 0 else 365


def year_start_ns(year: int) -> int:
    return int(np.datetime64(f"{year:04d}-01-01", "ns").astype(np.int64))


@dataclass(frozen=True)
class ContinuousLayout:
    """Shape and encoding of one channel-year dataset."""

    channel: ChannelId
    year: int
    sampling_rate: float
    chunk_samples: int
    codec: str = "pcodec"
    codec_level: int = 6
    samples_per_day: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "samples_per_day", samples_per_day(self.sampling_rate))

    @property
    def path(self) -> str:
        return continuous_path(self.channel, self.year)

    @property
    def n_days(self) -> int:
        return days_in_year(self.year)

    def day_index(self, day_ns: int) -> int:
        index = (day_ns - year_start_ns(self.year)) // NS_PER_DAY
        if not 0 <= index < self.n_days:
            raise SchemaError(f"day {day_ns} is outside year {self.year} of {self.path}")
        return int(index)


_DAY_VARS: dict[str, tuple[str, Any, dict[str, Any]]] = {
    # name: (dtype, fill, attrs)
    "starttime": ("int64", NAT, {**TIME_ATTRS, "long_name": "time of sample 0 of the day grid"}),
    "n_samples": ("int64", 0, {"units": "1", "long_name": "recorded samples"}),
    "flags": ("uint32", 0, {"long_name": "quality flags", "flag_meanings": " ".join(
        f"{f.name.lower()}={int(f)}" for f in Flag if f.name)}),
    "segments": ("str", "", {"long_name": "JSON list of source segments (exact start, ns)"}),
    "quarantine": ("str", "", {"long_name": "JSON list of quarantined pieces"}),
    "source_digest": ("str", "", {"long_name": "digest of the source files"}),
    "ingested_at": ("int64", NAT, {**TIME_ATTRS, "long_name": "completion ledger"}),
}


def create_continuous(root: zarr.Group, layout: ContinuousLayout) -> zarr.Group:
    """Create a channel-year dataset if absent; check an existing one matches ``layout``.

    Call under the store lock: creation is the only structural change of continuous data.
    """
    path = layout.path
    if path in root:
        group = root[path]
        assert isinstance(group, zarr.Group)
        check_continuous(group, layout)
        return group
    attrs = {
        "network": layout.channel.network,
        "station": layout.channel.station,
        "location": layout.channel.location,
        "channel": layout.channel.channel,
        "sampling_rate": float(layout.sampling_rate),
        "samples_per_day": layout.samples_per_day,
        "year": layout.year,
        "codec": layout.codec,
        "seismoflow_schema": SCHEMA_VERSION,
    }
    group = root.require_group(path)
    group.attrs.update(attrs)
    spd, n_days = layout.samples_per_day, layout.n_days
    group.create_array(
        "data", shape=(n_days, spd), chunks=(1, layout.chunk_samples), dtype="int32",
        fill_value=0, dimension_names=("day", "sample"),
        attributes={"units": "counts", "long_name": "raw counts; valid only where mask"},
        **integer_codec_kwargs(layout.codec, layout.codec_level),
    )
    group.create_array(
        "mask", shape=(n_days, spd), chunks=(1, layout.chunk_samples), dtype="bool",
        fill_value=False, dimension_names=("day", "sample"),
        compressors=[ZstdCodec(level=3)],
        attributes={"long_name": "True where a sample was recorded; gaps are False"},
    )
    for name, (dtype, fill, var_attrs) in _DAY_VARS.items():
        group.create_array(
            name, shape=(n_days,), chunks=(1,), dtype=dtype, fill_value=fill,
            dimension_names=("day",), attributes=var_attrs,
        )
    day = group.create_array(
        "day", shape=(n_days,), chunks=(n_days,), dtype="int64", fill_value=0,
        dimension_names=("day",),
        attributes={"units": f"days since {layout.year:04d}-01-01", "calendar": "proleptic_gregorian"},
    )
    day[:] = np.arange(n_days, dtype="int64")
    return group


def check_continuous(group: zarr.Group, layout: ContinuousLayout) -> None:
    """Refuse a channel-year whose rate or chunking differs from what the writer expects."""
    rate = float(group.attrs.get("sampling_rate", np.nan))
    if rate != float(layout.sampling_rate):
        raise SchemaError(
            f"{layout.path} holds {rate} Hz data but {layout.sampling_rate} Hz was written; "
            "segments at another rate are quarantined, not mixed into one channel-year"
        )


@dataclass(frozen=True)
class EventWindowLayout:
    """Shape of the event-window dataset: traces x components x samples at one rate."""

    sampling_rate: float
    pre_s: float
    post_s: float
    reference: str

    @property
    def n_samples(self) -> int:
        # Fixed by the schema, never by floating-point rounding of each window.
        return int(round((self.pre_s + self.post_s) * self.sampling_rate))

    def attrs(self) -> dict[str, Any]:
        return {
            "sampling_rate": float(self.sampling_rate),
            "pre_s": float(self.pre_s),
            "post_s": float(self.post_s),
            "reference": self.reference,
            "n_samples": self.n_samples,
            "seismoflow_schema": SCHEMA_VERSION,
        }


# Per-trace coordinates of ``events``: name -> (dtype, fill, attrs).
TRACE_COORDS: dict[str, tuple[str, Any, dict[str, Any]]] = {
    "trace_key": ("str", "", {"long_name": "event_id|NET.STA.LOC.channel_set (unique)"}),
    "event_id": ("str", "", {"long_name": "QuakeML event resource id"}),
    "network": ("str", "", {}),
    "station": ("str", "", {}),
    "location": ("str", "", {}),
    "channel_set": ("str", "", {"long_name": "band+instrument codes, e.g. HH?"}),
    "channels": ("str", "", {"long_name": "channel codes for Z,N,E (empty if missing)"}),
    "station_latitude": ("float64", np.nan, {"units": "degrees_north"}),
    "station_longitude": ("float64", np.nan, {"units": "degrees_east"}),
    "station_elevation": ("float64", np.nan, {"units": "m"}),
    "distance_deg": ("float64", np.nan, {"units": "degrees", "long_name": "epicentral distance"}),
    "origin_time": ("int64", NAT, dict(TIME_ATTRS)),
    "reference_time": ("int64", NAT, {**TIME_ATTRS, "long_name": "origin or predicted P"}),
    "window_start": ("int64", NAT, {**TIME_ATTRS, "long_name": "time of sample 0"}),
    "event_type": ("str", "", {"long_name": "QuakeML event type ('' if none)"}),
    "magnitude": ("float64", np.nan, {}),
    "source_sampling_rate": ("float64", np.nan, {"units": "Hz"}),
    "flags": ("uint32", 0, {"long_name": "quality flags (Flag)"}),
    "written_at": ("int64", NAT, {**TIME_ATTRS, "long_name": "completion ledger"}),
}


PER_TRACE_WRITES = frozenset({"flags", "written_at"})


def create_events(root: zarr.Group, layout: EventWindowLayout) -> zarr.Group:
    """Create the (empty) event-window dataset, or check an existing one has ``layout``."""
    if EVENTS in root:
        group = root[EVENTS]
        assert isinstance(group, zarr.Group)
        existing = {k: group.attrs.get(k) for k in ("sampling_rate", "pre_s", "post_s",
                                                     "reference", "n_samples")}
        wanted = {k: v for k, v in layout.attrs().items() if k in existing}
        if existing != wanted:
            raise SchemaError(
                f"the store's event windows were cut with {existing}, this run asks for "
                f"{wanted}; use the same window settings or another store"
            )
        return group
    group = root.require_group(EVENTS)
    group.attrs.update(layout.attrs())
    n = layout.n_samples
    group.create_array(
        "waveform", shape=(0, len(COMPONENTS), n), chunks=(1, len(COMPONENTS), n),
        dtype="float32", fill_value=np.nan, dimension_names=("trace", "component", "sample"),
        compressors=[ZstdCodec(level=3)],
        attributes={"units": "counts", "long_name": "window resampled to sampling_rate; NaN = no data"},
    )
    comp = group.create_array("component", shape=(len(COMPONENTS),), dtype="str",
                              dimension_names=("component",))
    comp[:] = np.array(COMPONENTS)
    offs = group.create_array("time", shape=(n,), dtype="float64", fill_value=np.nan,
                              dimension_names=("sample",),
                              attributes={"units": "s", "long_name": "time after reference_time"})
    offs[:] = np.arange(n) / layout.sampling_rate - layout.pre_s
    for name, (dtype, fill, attrs) in TRACE_COORDS.items():
        # Variables written per trace by concurrent tasks get one chunk per trace, so no two
        # writers ever share a chunk; the rest is written once, under the lock, at planning.
        chunk = 1 if name in PER_TRACE_WRITES else 4096
        group.create_array(name, shape=(0,), chunks=(chunk,), dtype=dtype, fill_value=fill,
                           dimension_names=("trace",), attributes=attrs)
    group.attrs["coordinates"] = " ".join(TRACE_COORDS)
    return group


def append_traces(group: zarr.Group, rows: Sequence[Mapping[str, Any]]) -> range:
    """Append trace coordinate rows (call under the store lock); return their indices.

    The waveform grows with them, filled with NaN (fill chunks are not written).
    """
    start = int(group["trace_key"].shape[0])
    stop = start + len(rows)
    for name, (dtype, _fill, _attrs) in TRACE_COORDS.items():
        arr = group[name]
        assert isinstance(arr, zarr.Array)
        arr.resize((stop,))
        values = [row[name] for row in rows]
        arr[start:stop] = np.array(values, dtype=object if dtype == "str" else dtype)
    wave = group["waveform"]
    assert isinstance(wave, zarr.Array)
    wave.resize((stop, *wave.shape[1:]))
    return range(start, stop)


def check_trace_region(group: zarr.Group, index: int, block: np.ndarray) -> None:
    """Refuse a waveform write that is not one whole, well-typed trace chunk."""
    wave = group["waveform"]
    assert isinstance(wave, zarr.Array)
    if not 0 <= index < wave.shape[0]:
        raise SchemaError(f"trace {index} is outside events/waveform (n={wave.shape[0]})")
    if block.shape != tuple(wave.shape[1:]) or block.dtype != np.float32:
        raise SchemaError(
            f"trace block {block.shape} {block.dtype} does not match "
            f"{tuple(wave.shape[1:])} float32"
        )
