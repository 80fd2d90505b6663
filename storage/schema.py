"""The store's layout, written down once. Every writer goes through this module.

Layout (``STORE.md`` documents it for users)::

    /                                   attrs: seismoflow_schema, title
    continuous/                         attrs: day_origin; coordinate day (days since 1970)
        {NET.STA.LOC.CHA}               one int32 array per channel (day, sample_{rate}),
                                        one shard per channel-day, lossless codec
    events/, noise/                     windows at one common sampling rate
        waveform    (trace, component, sample) float32, NaN where no data
        + per-trace coordinates (event, station, geometry, times, label, flags, written_at)
    features/{events,noise}, predictions/{version}
    tables/{name}/part-*.parquet        append-only tables: catalog, channels, channel_days
                                        (the continuous ledger), quarantine, windows (the
                                        window ledger), fetch_requests
    sources/{stationxml,quakeml}_{sha256[:16]}         source documents, verbatim bytes

Chunks never straddle a work unit (a channel-day or a trace), so units write disjoint
regions and concurrent runs cannot corrupt each other's chunks.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr
from seismoflow.storage.documents import run_documents
from seismoflow.storage.fsio import store_location, write_many
from zarr.codecs import BloscCodec, PCodec, ZstdCodec
from zarr.codecs.numcodecs import Delta
from zarr.storage import LocalStore, MemoryStore

from seismoflow.errors import StoreError
from seismoflow.ids import ChannelId
from seismoflow.times import NAT, NS_PER_DAY, samples_per_day

SCHEMA_VERSION = 3  # 3: one sharded array per channel, per-day rows in tables (STORE.md)
# Stores written before schema 3 are read only by ``seismoflow migrate``.
MIGRATABLE = (2,)
CONTINUOUS = "continuous"
EVENTS = "events"
NOISE_GROUP = "noise"  # noise windows: the layout of ``events`` plus ``label`` (issue 4)
TABLES = "tables"
SOURCES = "sources"
COMPONENTS: tuple[str, ...] = ("Z", "N", "E")
# Chunk keys ``c.0.1`` rather than ``c/0/1``: an array's chunks sit in its one folder, so a
# store holds no more folders than files.
FLAT_KEYS: dict[str, Any] = {"name": "default", "configuration": {"separator": "."}}
TIME_ATTRS: dict[str, str] = {
    "units": "nanoseconds since 1970-01-01",
    "calendar": "proleptic_gregorian",
}
INTEGER_CODECS = ("pcodec", "delta-zstd")
# pcodec pages of 16384 values: a page of unrecorded (zero) samples costs almost nothing,
# where one large page mixes zeros and waveform and costs ~0.3 bit per zero (measured).
# Dense channels (no zeros to isolate) take one page per chunk: 1% more bytes, ~30%
# faster encoding (bench/codecs.py).
PCODEC_PAGE = 16_384
# Days recording less than half a chunk of samples: delta + zstd beats pcodec (BENCHMARKS.md).
DENSE_COVERAGE = 0.5
# Sparse channels (event snippets) get chunks of about twice the samples they record per
# day, in multiples of this, so reading a snippet decodes ~2 snippets' worth, not 360 000.
SPARSE_CHUNK_STEP = 4_096
# At most this many inner chunks per shard for sparse channels (1 KiB of shard index).
MAX_INNER_CHUNKS = 64
# Channels recording at least this share of every day on average count as whole days.
WHOLE_DAYS = 0.9


def choose_codec(setting: str, coverage: float) -> str:
    """The codec for a new channel array: the setting, or for ``auto`` by ``coverage``: the
    recorded samples per day as a share of one chunk. Snippets much shorter than a chunk
    leave chunks mostly empty, where delta + zstd wins; longer records favour pcodec."""
    if setting != "auto":
        return setting
    return "pcodec" if coverage >= DENSE_COVERAGE else "delta-zstd"


@dataclass(frozen=True)
class ContinuousEncoding:
    """How a channel's array is chunked and encoded, fixed when it is created."""

    codec: str
    chunk_samples: int
    pcodec_page: int


def choose_encoding(
    setting: str, chunk_setting: int, recorded_per_day: float, day_samples: int
) -> ContinuousEncoding:
    """Codec, chunk length and pcodec page of a new channel array, from the samples its files
    record per day on average (``recorded_per_day``).

    Dense channels keep ``chunk_setting`` samples per chunk with one pcodec page per
    chunk. Sparse ones (less than half a chunk per day) get chunks of about twice their
    recorded samples per day, so an event snippet is one or two small chunks.
    """
    coverage = recorded_per_day / chunk_setting
    codec = choose_codec(setting, coverage)
    if coverage >= DENSE_COVERAGE:
        # One page per chunk only where chunks are full: zeros (unrecorded samples) in a
        # large page cost 10-15% more bytes for records of a few hours (measured).
        full = recorded_per_day >= WHOLE_DAYS * day_samples
        chunk = fit_chunk(day_samples, chunk_setting)
        return ContinuousEncoding(codec, chunk, chunk if full else PCODEC_PAGE)
    step = SPARSE_CHUNK_STEP
    chunk = max(
        2 * step,
        int(-(-2 * recorded_per_day // step)) * step,
        # A shard's index holds 16 bytes per inner chunk, stored or not (the index has a
        # fixed size): more than MAX_INNER_CHUNKS would outweigh a short record's samples.
        -(-day_samples // MAX_INNER_CHUNKS),
    )
    return ContinuousEncoding(codec, fit_chunk(day_samples, min(chunk, chunk_setting)), PCODEC_PAGE)


def fit_chunk(day_samples: int, target: int) -> int:
    """The inner chunk length nearest above ``target`` that divides the day's samples (so
    every channel of one rate has rows of the same length, ``day_samples``); ``target``
    itself where no divisor lies within 1.5x of it (the row is then padded)."""
    n = int(day_samples)
    divisors: set[int] = set()
    i = 1
    while i * i <= n:
        if n % i == 0:
            divisors.update((i, n // i))
        i += 1
    near = [d for d in divisors if target <= d <= 1.5 * target]
    return min(near) if near else int(target)


class SchemaError(StoreError, ValueError):
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


def integer_codec_kwargs(codec: str, level: int, page: int = PCODEC_PAGE) -> dict[str, Any]:
    """Codec pipeline for int32 counts. Chosen by measurement (``bench/codecs.py``)."""
    if codec == "pcodec":
        return {
            "serializer": PCodec(level=level, equal_pages_up_to=page),
            "compressors": None,
            "filters": None,
        }
    if codec == "delta-zstd":
        return {
            "filters": [Delta(dtype="int32")],
            # zstd level 3 measured best for speed at equal size (bench/codecs.py)
            "compressors": [BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")],
        }
    raise SchemaError(f"unknown codec {codec!r}; choose one of {INTEGER_CODECS}")


# --- continuous data ------------------------------------------------------------------
#
# One array per channel and sampling rate, ``continuous/{NET.STA.LOC.CHA}@{rate}hz`` (a
# channel recorded at another rate in other years gets a second array), over every day the
# store can hold
# (``day`` = days since 1970-01-01, shared by all channels through the ``continuous/day``
# coordinate) and the samples of one day at the channel's rate. One shard per channel-day:
# the day's only object, holding its inner chunks (only those with samples) and their
# index. What is known per day (start time, samples, flags, segments, sources, the ledger)
# is a row of ``tables/channel_days``, never a Zarr node.

DAY_ORIGIN = "1970-01-01"
# Days from 1970-01-01 to 2100-01-01: the day axis is fixed, so creating a channel never
# depends on which days a run brings and no array is ever resized.
N_DAYS = 47_482


def rate_tag(rate: float) -> str:
    """``40.0`` -> ``40hz``, ``0.1`` -> ``0p1hz``: names the sample dimension of a rate."""
    return f"{float(rate):g}".replace(".", "p").replace("-", "m") + "hz"


def array_name(channel: ChannelId, rate: float) -> str:
    """``CI.CCA..BHN@40hz``: the channel's array at one sampling rate."""
    return f"{channel.nslc}@{rate_tag(rate)}"


def continuous_path(channel: ChannelId, rate: float) -> str:
    return f"{CONTINUOUS}/{array_name(channel, rate)}"


def day_index(day_ns: int) -> int:
    """Row of the day starting at ``day_ns`` (UTC midnight) in every channel's array."""
    index, rest = divmod(int(day_ns), NS_PER_DAY)
    if rest or not 0 <= index < N_DAYS:
        raise SchemaError(
            f"day {np.datetime64(int(day_ns), 'ns')} is not a UTC midnight between "
            f"{DAY_ORIGIN} and 2100-01-01"
        )
    return int(index)


@dataclass(frozen=True)
class ContinuousLayout:
    """Shape and encoding of one channel's array, fixed when it is created."""

    channel: ChannelId
    sampling_rate: float
    chunk_samples: int
    codec: str = "pcodec"
    codec_level: int = 6
    pcodec_page: int = PCODEC_PAGE
    samples_per_day: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "samples_per_day", samples_per_day(self.sampling_rate))

    @property
    def name(self) -> str:
        return array_name(self.channel, self.sampling_rate)

    @property
    def path(self) -> str:
        return continuous_path(self.channel, self.sampling_rate)

    @property
    def width(self) -> int:
        """Samples in a row: the day's, padded to whole inner chunks (padding is never
        written: inner chunks of fill values are not stored)."""
        return -(-self.samples_per_day // self.chunk_samples) * self.chunk_samples

    @property
    def sample_dim(self) -> str:
        """``sample_100hz``; rows padded beyond the day (a rate whose day has no divisor
        near the chunk length) name their length too, as xarray needs one size per name."""
        name = f"sample_{rate_tag(self.sampling_rate)}"
        return name if self.width == self.samples_per_day else f"{name}_{self.width}"

    def attrs(self) -> dict[str, Any]:
        return {
            "network": self.channel.network,
            "station": self.channel.station,
            "location": self.channel.location,
            "channel": self.channel.channel,
            "sampling_rate": float(self.sampling_rate),
            "samples_per_day": self.samples_per_day,
            "codec": self.codec,
            "codec_level": self.codec_level,
            "chunk_samples": self.chunk_samples,
            "pcodec_page": self.pcodec_page,
            "units": "counts",
            "long_name": (
                "raw counts; sample i of day d at tables/channel_days starttime_ns + "
                "i / sampling_rate; recorded only where the day's runs say (else 0)"
            ),
            "seismoflow_schema": SCHEMA_VERSION,
        }


def layout_from_attrs(attrs: Mapping[str, Any]) -> ContinuousLayout:
    """The layout a channel's array was created with, from its attributes."""
    return ContinuousLayout(
        ChannelId(attrs["network"], attrs["station"], attrs["location"], attrs["channel"]),
        float(attrs["sampling_rate"]),
        int(attrs["chunk_samples"]),
        str(attrs["codec"]),
        int(attrs["codec_level"]),
        int(attrs["pcodec_page"]),
    )


def continuous_group(root: zarr.Group) -> zarr.Group:
    """The ``continuous`` group with its ``day`` coordinate (created if absent; call under
    the store lock)."""
    if CONTINUOUS in root:
        group = root[CONTINUOUS]
        assert isinstance(group, zarr.Group)
        return group
    group = root.require_group(CONTINUOUS)
    group.attrs.update({"day_origin": DAY_ORIGIN, "seismoflow_schema": SCHEMA_VERSION})
    day = group.create_array(
        "day",
        chunk_key_encoding=FLAT_KEYS,
        shape=(N_DAYS,),
        chunks=(N_DAYS,),
        dtype="int64",
        fill_value=0,
        dimension_names=("day",),
        attributes={"units": f"days since {DAY_ORIGIN}", "calendar": "proleptic_gregorian"},
    )
    day[:] = np.arange(N_DAYS, dtype="int64")
    return group


def create_continuous(root: zarr.Group, layout: ContinuousLayout) -> zarr.Array:
    """Create the array of a channel at a rate if absent."""
    create_continuous_many(root, [layout])
    arr = root[layout.path]
    assert isinstance(arr, zarr.Array)
    return arr


def create_continuous_many(root: zarr.Group, layouts: Sequence[ContinuousLayout]) -> None:
    """Create the arrays of ``layouts`` that are absent (call under the store lock). An
    existing array keeps the chunking and codec it was created with.

    Each array is its one metadata document (``zarr.json``), as zarr writes it, written
    straight into the store, all at once: creating them through the group would check the
    array's path and every parent group's document first (about nine requests per array on
    an object store, one after another, under the store lock).
    """
    group = continuous_group(root)
    existing = set(group.array_keys())
    documents: dict[str, bytes] = {}
    for layout in layouts:
        if layout.name in existing:
            continue
        documents[f"{CONTINUOUS}/{layout.name}/{ZARR_JSON}"] = continuous_document(layout)
        existing.add(layout.name)
    location = store_location(root)
    write_many(location, documents)
    run = run_documents(location)
    if run is not None:  # the run's tasks open these arrays from the bytes written here
        prefix = f"{root.path}/".lstrip("/")
        run.remember(
            {
                prefix + key.removesuffix(f"/{ZARR_JSON}"): json.loads(raw)
                for key, raw in documents.items()
            }
        )


ZARR_JSON = "zarr.json"


def continuous_document(layout: ContinuousLayout) -> bytes:
    """The metadata document (``zarr.json``) of a channel's array, as zarr writes it: the
    array is created through zarr's public API in a store in memory and its document
    read back."""
    written: dict[str, Any] = {}
    zarr.create_array(
        MemoryStore(written),
        name=layout.name,
        shape=(N_DAYS, layout.width),
        chunks=(1, layout.chunk_samples),
        shards=(1, layout.width),
        dtype="int32",
        fill_value=0,
        dimension_names=("day", layout.sample_dim),
        chunk_key_encoding=FLAT_KEYS,
        attributes=layout.attrs(),
        **integer_codec_kwargs(layout.codec, layout.codec_level, layout.pcodec_page),
    )
    return bytes(written[f"{layout.name}/{ZARR_JSON}"].to_bytes())


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


# Written from the window ledger (``tables/windows``) when a run finalizes the store.
LEDGER_COORDS = frozenset({"flags", "written_at"})

# Coordinates a window group holds beyond TRACE_COORDS (noise windows carry their label).
EXTRA_TRACE_COORDS: dict[str, dict[str, tuple[str, Any, dict[str, Any]]]] = {
    NOISE_GROUP: {
        "label": ("str", "", {"long_name": "class of the window (noise)"}),
        "source": ("str", "", {"long_name": "where it was drawn: continuous or pre-event"}),
    },
}


def _trace_coords(name: str) -> dict[str, tuple[str, Any, dict[str, Any]]]:
    return {**TRACE_COORDS, **EXTRA_TRACE_COORDS.get(name, {})}


def create_events(
    root: zarr.Group, layout: EventWindowLayout, name: str = EVENTS
) -> zarr.Group:
    """Create the (empty) event-window dataset, or check an existing one has ``layout``.

    ``name`` is the group: ``events``, or ``noise`` (same layout, plus the coordinates of
    ``EXTRA_TRACE_COORDS[name]``), so every window of the store is cut the same way.
    """
    if name in root:
        group = root[name]
        assert isinstance(group, zarr.Group)
        existing = {
            k: group.attrs.get(k)
            for k in ("sampling_rate", "pre_s", "post_s", "reference", "n_samples")
        }
        wanted = {k: v for k, v in layout.attrs().items() if k in existing}
        if existing != wanted:
            raise SchemaError(
                f"the store's event windows were cut with {existing}, this run asks for "
                f"{wanted}; use the same window settings or another store"
            )
        return group
    # The group is made in a store in memory through zarr's public API and its objects
    # (documents, the component and time chunks) put into the store at once, the group's
    # own document last so it appears whole: made in the store itself, zarr checks and
    # reads every parent's document around each of its ~20 nodes (~230 requests, one after
    # another, on an object store).
    written: dict[str, Any] = {}
    staging = zarr.open_group(MemoryStore(written), mode="w", zarr_format=3)
    _fill_window_group(staging.create_group(name), layout, name)
    objects = {k: bytes(v.to_bytes()) for k, v in written.items() if k.startswith(f"{name}/")}
    prefix = f"{root.path}/".lstrip("/")
    own = f"{name}/{ZARR_JSON}"
    location = store_location(root)
    write_many(location, {prefix + k: raw for k, raw in objects.items() if k != own})
    write_many(location, {prefix + own: objects[own]})
    group = root[name]
    assert isinstance(group, zarr.Group)
    return group


# Window traces are stored this many to an object (a shard of one-trace inner chunks): one
# object per trace cost a request each on object stores and a file each on disk.
WINDOW_TRACES_PER_SHARD = 32


def _fill_window_group(group: zarr.Group, layout: EventWindowLayout, name: str) -> None:
    """The arrays and attributes of a new window group ``name`` (see :func:`create_events`)."""
    group.attrs.update(layout.attrs())
    n = layout.n_samples
    group.create_array(
        "waveform",
        chunk_key_encoding=FLAT_KEYS,
        shape=(0, len(COMPONENTS), n),
        chunks=(1, len(COMPONENTS), n),
        shards=(WINDOW_TRACES_PER_SHARD, len(COMPONENTS), n),
        dtype="float32",
        fill_value=np.nan,
        dimension_names=("trace", "component", "sample"),
        compressors=[ZstdCodec(level=3)],
        attributes={
            "units": "counts",
            "long_name": "window resampled to sampling_rate; NaN = no data",
        },
    )
    comp = group.create_array(
        "component",
        shape=(len(COMPONENTS),),
        dtype="str",
        dimension_names=("component",),
        chunk_key_encoding=FLAT_KEYS,
    )
    comp[:] = np.array(COMPONENTS)
    offs = group.create_array(
        "time",
        chunk_key_encoding=FLAT_KEYS,
        shape=(n,),
        dtype="float64",
        fill_value=np.nan,
        dimension_names=("sample",),
        attributes={"units": "s", "long_name": "time after reference_time"},
    )
    offs[:] = np.arange(n) / layout.sampling_rate - layout.pre_s
    for coord, (dtype, fill, attrs) in _trace_coords(name).items():
        chunk = 4096
        group.create_array(
            coord,
            chunk_key_encoding=FLAT_KEYS,
            shape=(0,),
            chunks=(chunk,),
            dtype=dtype,
            fill_value=fill,
            dimension_names=("trace",),
            attributes=attrs,
        )
    group.attrs["coordinates"] = " ".join(_trace_coords(name))


def append_traces(group: zarr.Group, rows: Sequence[Mapping[str, Any]]) -> range:
    """Append trace coordinate rows (call under the store lock); return their indices.

    The waveform grows with them, filled with NaN (fill chunks are not written). On an
    object store the ~20 coordinate arrays are grown and written on threads (each is a
    document and a chunk or two: requests that would otherwise wait one after another).
    """
    keys = group["trace_key"]
    assert isinstance(keys, zarr.Array)
    start = int(keys.shape[0])
    stop = start + len(rows)
    extras = {k: v for more in EXTRA_TRACE_COORDS.values() for k, v in more.items() if k in group}

    def grow(name: str, dtype: str) -> None:
        arr = group[name]
        assert isinstance(arr, zarr.Array)
        arr.resize((stop,))
        values = [row[name] for row in rows]
        arr[start:stop] = np.array(values, dtype=object if dtype == "str" else dtype)

    coords = [(name, dtype) for name, (dtype, _f, _a) in {**TRACE_COORDS, **extras}.items()]
    if isinstance(group.store, LocalStore):
        for name, dtype in coords:
            grow(name, dtype)
    else:
        with ThreadPoolExecutor(APPEND_THREADS) as pool:
            for future in [pool.submit(grow, name, dtype) for name, dtype in coords]:
                future.result()
    wave = group["waveform"]
    assert isinstance(wave, zarr.Array)
    wave.resize((stop, *wave.shape[1:]))
    return range(start, stop)


# Coordinate arrays :func:`append_traces` grows at once on an object store.
APPEND_THREADS = 8


def check_trace_region(wave: zarr.Array, index: int, block: np.ndarray) -> None:
    """Refuse a write into ``wave`` (a group's ``waveform``) that is not one whole,
    well-typed trace chunk."""
    if wave.chunks[0] != 1:
        raise SchemaError("events/waveform must be chunked one trace per chunk")
    if not 0 <= index < wave.shape[0]:
        raise SchemaError(f"trace {index} is outside events/waveform (n={wave.shape[0]})")
    if block.shape != tuple(wave.shape[1:]) or block.dtype != np.float32:
        raise SchemaError(
            f"trace block {block.shape} {block.dtype} does not match "
            f"{tuple(wave.shape[1:])} float32"
        )


# --- predictions (issue 4): what a model learned, written back beside the waveforms -------
#
#   predictions/                 attrs: latest (version id), versions (oldest first)
#       {version}/               one prediction run; never rewritten by a later one
#           dims: trace (a window of events/ or noise/), event, class
#           attrs: model_id, code_version, flow_run_id, created_at, classes, status, ...

PREDICTIONS = "predictions"
PREDICTION_CHUNK = 4096
# name -> (dims, dtype, fill, attrs). ``probability_{model}`` (trace, class) variables are
# added per classifier of the model (:func:`create_prediction_version`).
PREDICTION_VARS: dict[str, tuple[tuple[str, ...], str, Any, dict[str, Any]]] = {
    "class": (("class",), "str", "", {"long_name": "class names (column order)"}),
    "group": (("trace",), "str", "", {"long_name": "window group: events or noise"}),
    "trace_index": (("trace",), "int64", -1, {"long_name": "index of the window in its group"}),
    "trace_key": (("trace",), "str", "", {"long_name": "event_id|NET.STA.LOC.channel_set"}),
    "event_id": (("trace",), "str", "", {"long_name": "QuakeML event id (noise: noise:key)"}),
    "network": (("trace",), "str", "", {}),
    "station": (("trace",), "str", "", {}),
    "location": (("trace",), "str", "", {}),
    "channel_set": (("trace",), "str", "", {}),
    "probability": (
        ("trace", "class"),
        "float32",
        np.nan,
        {"units": "1", "long_name": "class probability of the model's chosen classifier"},
    ),
    "predicted_class": (("trace",), "str", "", {"long_name": "argmax of probability"}),
    "cluster": (("trace",), "int32", -1, {"long_name": "K-Means cluster of the features"}),
    "anomaly_score": (
        ("trace",),
        "float32",
        np.nan,
        {"units": "1", "long_name": "Isolation Forest score; higher = more anomalous"},
    ),
    "pca_x": (("trace",), "float32", np.nan, {"long_name": "PCA component 1 of the features"}),
    "pca_y": (("trace",), "float32", np.nan, {"long_name": "PCA component 2 of the features"}),
    "tsne_x": (("trace",), "float32", np.nan, {"long_name": "t-SNE x over this prediction set"}),
    "tsne_y": (("trace",), "float32", np.nan, {"long_name": "t-SNE y over this prediction set"}),
    "event": (("event",), "str", "", {"long_name": "event id (noise windows: noise:key)"}),
    "event_probability": (
        ("event", "class"),
        "float32",
        np.nan,
        {"units": "1", "long_name": "mean class probability over the event's traces"},
    ),
    "event_class": (("event",), "str", "", {"long_name": "argmax of event_probability"}),
    "event_cluster": (("event",), "int32", -1, {"long_name": "most common trace cluster"}),
    "event_anomaly_score": (
        ("event",),
        "float32",
        np.nan,
        {"units": "1", "long_name": "mean anomaly score of the event's traces"},
    ),
    "event_n_traces": (("event",), "int32", 0, {"long_name": "traces of the event"}),
}
PREDICTION_COORDS: tuple[str, ...] = (
    "group",
    "trace_index",
    "trace_key",
    "event_id",
    "network",
    "station",
    "location",
    "channel_set",
)
PREDICTION_REQUIRED_ATTRS: tuple[str, ...] = (
    "model_id",
    "code_version",
    "flow_run_id",
    "created_at",
)


def prediction_path(version: str) -> str:
    if not version or "/" in version or version.startswith("."):
        raise SchemaError(f"prediction version {version!r} is not a plain name")
    return f"{PREDICTIONS}/{version}"


def create_prediction_version(
    root: zarr.Group,
    version: str,
    n_traces: int,
    n_events: int,
    classes: Sequence[str],
    models: Sequence[str],
    attrs: Mapping[str, Any],
) -> zarr.Group:
    """Create the empty group of one prediction run (call under the store lock).

    A version is written once: an existing one is refused, so a new run never touches the
    arrays of an earlier one. ``status`` is ``writing`` until the writer marks it complete.
    """
    missing = [k for k in PREDICTION_REQUIRED_ATTRS if k not in attrs]
    if missing:
        raise SchemaError(f"prediction attributes {missing} are required (provenance)")
    path = prediction_path(version)
    if path in root:
        raise SchemaError(f"{path} exists; a prediction run writes a new version")
    parent = root.require_group(PREDICTIONS)
    if "versions" not in parent.attrs:
        parent.attrs.update({"versions": [], "seismoflow_schema": SCHEMA_VERSION})
    group = root.require_group(path)
    sizes = {"trace": n_traces, "event": n_events, "class": len(classes)}
    variables = dict(PREDICTION_VARS)
    for model in models:
        variables[f"probability_{model}"] = (
            ("trace", "class"),
            "float32",
            np.nan,
            {"units": "1", "long_name": f"class probability of {model}"},
        )
    for name, (dims, dtype, fill, var_attrs) in variables.items():
        shape = tuple(sizes[d] for d in dims)
        group.create_array(
            name,
            chunk_key_encoding=FLAT_KEYS,
            shape=shape,
            chunks=tuple(max(1, min(s, PREDICTION_CHUNK)) for s in shape),
            dtype=dtype,
            fill_value=fill,
            dimension_names=dims,
            attributes=var_attrs,
        )
    group.attrs.update(
        {
            **dict(attrs),
            "classes": list(classes),
            "models": list(models),
            "status": "writing",
            "coordinates": " ".join(PREDICTION_COORDS),
            "seismoflow_schema": SCHEMA_VERSION,
        }
    )
    return group


def check_prediction_values(group: zarr.Group, name: str, values: np.ndarray) -> np.ndarray:
    """``values`` cast to the variable's dtype; refuse a wrong shape or a lossy cast."""
    if name not in group:
        raise SchemaError(f"{group.path} has no variable {name!r}")
    arr = group[name]
    assert isinstance(arr, zarr.Array)
    values = np.asarray(values)
    if values.shape != arr.shape:
        raise SchemaError(f"{group.path}/{name} is {arr.shape}, got values of {values.shape}")
    if arr.dtype.kind in "OTU" or str(arr.dtype) in ("str", "StringDType()"):
        return values.astype(object).astype(str).astype(object)
    if (
        values.dtype.kind == "f"
        and arr.dtype.kind in "iu"
        and (not np.all(np.isfinite(values)) or np.any(values != np.round(values)))
    ):
        raise SchemaError(f"{group.path}/{name} holds integers; got non-integer values")
    return values.astype(arr.dtype)


# --- features (issue 4): physics features per window, beside the windows ----------------
#
# features/{events,noise}/values (trace, feature) float32: one row per trace of the window
# group of the same name, one column per feature; ``feature`` names, ``unit`` and
# ``description`` per column; provenance in the group's attributes. Rewritten whole by each
# extraction run (the values are a pure function of the windows and the code version).

FEATURES = "features"


def features_path(source_group: str) -> str:
    return f"{FEATURES}/{source_group}"


def write_features(
    root: zarr.Group,
    source_group: str,
    values: np.ndarray,
    names: Sequence[str],
    units: Sequence[str],
    descriptions: Sequence[str],
    attrs: Mapping[str, Any],
) -> zarr.Group:
    """Write the feature table of ``source_group`` (``events`` or ``noise``), replacing an
    earlier one; refuse values that do not match the window group's traces or the names."""
    if source_group not in root:
        raise SchemaError(f"the store has no {source_group}/ windows to attach features to")
    keys = root[f"{source_group}/trace_key"]
    assert isinstance(keys, zarr.Array)
    values = np.asarray(values)
    if values.ndim != 2 or values.shape != (keys.shape[0], len(names)):
        raise SchemaError(
            f"features of {source_group} must be ({keys.shape[0]} traces, {len(names)} "
            f"features); got {values.shape}"
        )
    if not len(names) == len(units) == len(descriptions):
        raise SchemaError("feature names, units and descriptions differ in length")
    path = features_path(source_group)
    group = root.require_group(path)
    group.attrs.update({"status": "writing"})
    for name in ("values", "feature", "unit", "description"):
        if name in group:
            del group[name]
    arr = group.create_array(
        "values",
        chunk_key_encoding=FLAT_KEYS,
        shape=values.shape,
        chunks=(max(1, min(values.shape[0], 4096)), max(1, values.shape[1])),
        dtype="float32",
        fill_value=np.nan,
        dimension_names=("trace", "feature"),
        compressors=[ZstdCodec(level=3)],
        attributes={"long_name": f"physics features of {source_group}/ windows (NaN: none)"},
    )
    arr[:] = values.astype(np.float32)
    for name, col in (("feature", names), ("unit", units), ("description", descriptions)):
        a = group.create_array(
            name,
            shape=(len(col),),
            dtype="str",
            dimension_names=("feature",),
            chunk_key_encoding=FLAT_KEYS,
        )
        a[:] = np.array(list(col), dtype=object)
    group.attrs.update(
        {
            **dict(attrs),
            "source_group": source_group,
            "coordinates": "feature unit description",
            "seismoflow_schema": SCHEMA_VERSION,
            "status": "complete",
        }
    )
    return group
