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
        sources     (day)          str    JSON list of the source files (path, size, mtime)
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

import asyncio
import enum
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr
from seismoflow.storage.chunkio import read_chunks, write_chunks
from zarr.codecs import BloscCodec, PCodec, ZstdCodec
from zarr.codecs.numcodecs import Delta
from zarr.core.buffer import default_buffer_prototype
from zarr.core.group import AsyncGroup
from zarr.core.sync import sync
from zarr.storage import LocalStore

from seismoflow.errors import StoreError
from seismoflow.ids import ChannelId
from seismoflow.times import NAT, NS_PER_DAY, samples_per_day

SCHEMA_VERSION = 2  # 2: chunk length and pcodec pages per channel-year (STORE.md)
CONTINUOUS = "continuous"
EVENTS = "events"
NOISE_GROUP = "noise"  # noise windows: the layout of ``events`` plus ``label`` (issue 4)
TABLES = "tables"
SOURCES = "sources"
COMPONENTS: tuple[str, ...] = ("Z", "N", "E")
TIME_ATTRS: dict[str, str] = {
    "units": "nanoseconds since 1970-01-01",
    "calendar": "proleptic_gregorian",
}
INTEGER_CODECS = ("pcodec", "delta-zstd")
# pcodec pages of 16384 values: a page of unrecorded (zero) samples costs almost nothing,
# where one large page mixes zeros and waveform and costs ~0.3 bit per zero (measured).
# Dense channel-years (no zeros to isolate) take one page per chunk: 1% more bytes, ~30%
# faster encoding (bench/codecs.py).
PCODEC_PAGE = 16_384
# Days recording less than half a chunk of samples: delta + zstd beats pcodec (BENCHMARKS.md).
DENSE_COVERAGE = 0.5
# Sparse channel-years (event snippets) get chunks of about twice the samples they record per
# day, in multiples of this, so reading a snippet decodes ~2 snippets' worth, not 360 000.
SPARSE_CHUNK_STEP = 4_096
# Channel-years recording at least this share of every day on average count as whole days.
WHOLE_DAYS = 0.9


def choose_codec(setting: str, coverage: float) -> str:
    """The codec for a new channel-year: the setting, or for ``auto`` by ``coverage``: the
    recorded samples per day as a share of one chunk. Snippets much shorter than a chunk
    leave chunks mostly empty, where delta + zstd wins; longer records favour pcodec."""
    if setting != "auto":
        return setting
    return "pcodec" if coverage >= DENSE_COVERAGE else "delta-zstd"


@dataclass(frozen=True)
class ContinuousEncoding:
    """How a channel-year is chunked and encoded, fixed when it is created."""

    codec: str
    chunk_samples: int
    pcodec_page: int


def choose_encoding(
    setting: str, chunk_setting: int, recorded_per_day: float, day_samples: int
) -> ContinuousEncoding:
    """Codec, chunk length and pcodec page of a new channel-year, from the samples its files
    record per day on average (``recorded_per_day``).

    Dense channel-years keep ``chunk_setting`` samples per chunk with one pcodec page per
    chunk. Sparse ones (less than half a chunk per day) get chunks of about twice their
    recorded samples per day, so an event snippet is one or two small chunks.
    """
    coverage = recorded_per_day / chunk_setting
    codec = choose_codec(setting, coverage)
    if coverage >= DENSE_COVERAGE:
        # One page per chunk only where chunks are full: zeros (unrecorded samples) in a
        # large page cost 10-15% more bytes for records of a few hours (measured).
        full = recorded_per_day >= WHOLE_DAYS * day_samples
        return ContinuousEncoding(codec, chunk_setting, chunk_setting if full else PCODEC_PAGE)
    step = SPARSE_CHUNK_STEP
    chunk = max(2 * step, int(-(-2 * recorded_per_day // step)) * step)
    return ContinuousEncoding(codec, min(chunk, chunk_setting), PCODEC_PAGE)


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
    pcodec_page: int = PCODEC_PAGE
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
    "flags": (
        "uint32",
        0,
        {
            "long_name": "quality flags",
            "flag_meanings": " ".join(f"{f.name.lower()}={int(f)}" for f in Flag if f.name),
        },
    ),
    "segments": ("str", "", {"long_name": "JSON list of source segments (exact start, ns)"}),
    "quarantine": ("str", "", {"long_name": "JSON list of quarantined pieces"}),
    "sources": ("str", "", {"long_name": "JSON list of source files: path, size, mtime_ns"}),
    "ingested_at": ("int64", NAT, {**TIME_ATTRS, "long_name": "completion ledger"}),
}


def create_continuous(root: zarr.Group, layout: ContinuousLayout) -> zarr.Group:
    """Create a channel-year dataset if absent; check an existing one matches ``layout``.

    Call under the store lock: creation is the only structural change of continuous data.
    """
    rates = create_continuous_many(root, [layout])
    check_continuous({"sampling_rate": rates[layout.path]}, layout)
    group = root[layout.path]
    assert isinstance(group, zarr.Group)
    return group


def create_continuous_many(
    root: zarr.Group, layouts: Sequence[ContinuousLayout], concurrency: int = 64
) -> dict[str, float]:
    """Create the channel-years that are absent; return every one's stored sampling rate.

    An existing channel-year keeps its rate: the caller ingests at that rate, and segments
    at another rate are quarantined (``mixed_rates``) rather than failing the run.

    Creating thousands of small channel-years through zarr's API costs ~20 ms each (every
    array re-checks the hierarchy). The metadata documents are the same for every
    channel-year of one shape, so they are made once per shape in memory and stamped into
    the store, with the channel's attributes in its group document.
    """
    store = root.store
    prefix = root.path.strip("/")
    proto = default_buffer_prototype()

    def key(path: str) -> str:
        return f"{prefix}/{path}" if prefix else path

    # Made here, outside the event loop: making one runs zarr synchronously.
    templates = {layout_shape(layout): template_documents(layout) for layout in layouts}

    async def one(layout: ContinuousLayout) -> tuple[str, float]:
        async with sem:
            existing = await store.get(key(f"{layout.path}/zarr.json"), prototype=proto)
            if existing is not None:
                return layout.path, _stored_rate(existing.to_bytes())
            parents, arrays, group = _new_channel_year(layout, templates, key)
            writes = [
                store.set(p, proto.buffer.from_bytes(_GROUP_DOC))
                for p in parents
                if not await store.exists(p)
            ]
            writes += [store.set(k, proto.buffer.from_bytes(doc)) for k, doc in arrays]
            await asyncio.gather(*writes)
            # Group document last: a channel-year exists only once all its arrays do.
            await store.set(group[0], proto.buffer.from_bytes(group[1]))
            return layout.path, float(layout.sampling_rate)

    if isinstance(store, LocalStore):
        return {layout.path: _create_local(store, key, layout, templates) for layout in layouts}

    sem = asyncio.Semaphore(concurrency)

    async def all_() -> list[tuple[str, float]]:
        return list(await asyncio.gather(*(one(layout) for layout in layouts)))

    return dict(sync(all_()))


def _stored_rate(group_doc: bytes) -> float:
    """Sampling rate of an existing channel-year, from its group document."""
    return float(json.loads(group_doc)["attributes"]["sampling_rate"])


def _new_channel_year(
    layout: ContinuousLayout,
    templates: dict[tuple[Any, ...], dict[str, bytes]],
    key: Callable[[str], str],
) -> tuple[list[str], list[tuple[str, bytes]], tuple[str, bytes]]:
    """What creating the channel-year of ``layout`` writes: its parents' document keys
    (written only where absent), its array documents, and its group document (written last,
    with the channel's attributes)."""
    docs = dict(templates[layout_shape(layout)])
    group_doc = json.loads(docs.pop("zarr.json"))
    group_doc["attributes"] = _continuous_attrs(layout)
    base = layout.path.split("/")
    parents = [key(f"{'/'.join(base[:i])}/zarr.json") for i in range(1, len(base))]
    arrays = [(key(f"{layout.path}/{rel}"), doc) for rel, doc in docs.items()]
    return parents, arrays, (key(f"{layout.path}/zarr.json"), json.dumps(group_doc).encode())


def _create_local(
    store: LocalStore,
    key: Callable[[str], str],
    layout: ContinuousLayout,
    templates: dict[tuple[Any, ...], dict[str, bytes]],
) -> float:
    """:func:`create_continuous_many` for one channel-year of a local directory store, with
    plain file I/O in the calling thread (zarr's async path costs ~10x more per document);
    the same documents, the group document last. Returns the stored sampling rate."""
    (existing,) = read_chunks(store, [key(f"{layout.path}/zarr.json")])
    if existing is not None:
        return _stored_rate(existing)
    parents, arrays, group = _new_channel_year(layout, templates, key)
    have = read_chunks(store, parents)
    missing = [(p, _GROUP_DOC) for p, doc in zip(parents, have, strict=True) if doc is None]
    write_chunks(store, [*missing, *arrays], fresh=True)
    write_chunks(store, [group], fresh=True)
    return float(layout.sampling_rate)


def layout_shape(layout: ContinuousLayout) -> tuple[Any, ...]:
    """What makes the metadata documents of a channel-year (all but the channel)."""
    return (
        layout.year,
        layout.sampling_rate,
        layout.chunk_samples,
        layout.codec,
        layout.codec_level,
        layout.pcodec_page,
    )


def layout_from_attrs(attrs: Mapping[str, Any]) -> ContinuousLayout | None:
    """The layout a channel-year was created with, from its group attributes; ``None`` for
    a channel-year written before schema 2 (whose attributes do not give it all)."""
    if int(attrs.get("seismoflow_schema", 0)) < 2 or "chunk_samples" not in attrs:
        return None
    return ContinuousLayout(
        ChannelId(attrs["network"], attrs["station"], attrs["location"], attrs["channel"]),
        int(attrs["year"]),
        float(attrs["sampling_rate"]),
        int(attrs["chunk_samples"]),
        str(attrs["codec"]),
        int(attrs["codec_level"]),
        int(attrs["pcodec_page"]),
    )


_TEMPLATE_CACHE: dict[tuple[Any, ...], dict[str, bytes]] = {}


def template_documents(layout: ContinuousLayout) -> dict[str, bytes]:
    """Metadata documents of a channel-year of ``layout``'s shape (cached per process): a
    schema-2 channel-year's arrays are opened from these, with no store reads."""
    key = layout_shape(layout)
    if key not in _TEMPLATE_CACHE:
        _TEMPLATE_CACHE[key] = _template_documents(layout)
    return _TEMPLATE_CACHE[key]


_GROUP_DOC = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}).encode()


def _template_documents(layout: ContinuousLayout) -> dict[str, bytes]:
    """Every document of a channel-year of this shape, made in a memory store."""
    mem = zarr.storage.MemoryStore()
    group = zarr.open_group(mem, mode="w", zarr_format=3)
    sync(_create_continuous(group._async_group, layout))  # noqa: SLF001
    docs: dict[str, bytes] = {}

    async def collect() -> None:
        proto = default_buffer_prototype()
        async for k in mem.list_prefix(layout.path + "/"):
            buf = await mem.get(k, prototype=proto)
            assert buf is not None
            docs[k[len(layout.path) + 1 :]] = buf.to_bytes()

    sync(collect())
    return docs


def _continuous_attrs(layout: ContinuousLayout) -> dict[str, Any]:
    return {
        "network": layout.channel.network,
        "station": layout.channel.station,
        "location": layout.channel.location,
        "channel": layout.channel.channel,
        "sampling_rate": float(layout.sampling_rate),
        "samples_per_day": layout.samples_per_day,
        "year": layout.year,
        "codec": layout.codec,
        "codec_level": layout.codec_level,
        "chunk_samples": layout.chunk_samples,
        "pcodec_page": layout.pcodec_page,
        "seismoflow_schema": SCHEMA_VERSION,
    }


async def _create_continuous(aroot: AsyncGroup, layout: ContinuousLayout) -> None:
    group = await aroot.require_group(layout.path)
    await group.update_attributes(_continuous_attrs(layout))
    spd, n_days = layout.samples_per_day, layout.n_days
    creations = [
        group.create_array(
            "data",
            shape=(n_days, spd),
            chunks=(1, layout.chunk_samples),
            dtype="int32",
            fill_value=0,
            dimension_names=("day", "sample"),
            attributes={"units": "counts", "long_name": "raw counts; valid only where mask"},
            **integer_codec_kwargs(layout.codec, layout.codec_level, layout.pcodec_page),
        ),
        group.create_array(
            "mask",
            shape=(n_days, spd),
            chunks=(1, layout.chunk_samples),
            dtype="bool",
            fill_value=False,
            dimension_names=("day", "sample"),
            compressors=[ZstdCodec(level=3)],
            attributes={"long_name": "True where a sample was recorded; gaps are False"},
        ),
    ]
    creations += [
        group.create_array(
            name,
            shape=(n_days,),
            chunks=(1,),
            dtype=dtype,
            fill_value=fill,
            dimension_names=("day",),
            attributes=var_attrs,
        )
        for name, (dtype, fill, var_attrs) in _DAY_VARS.items()
    ]
    await asyncio.gather(*creations)
    day = await group.create_array(
        "day",
        shape=(n_days,),
        chunks=(n_days,),
        dtype="int64",
        fill_value=0,
        dimension_names=("day",),
        attributes={
            "units": f"days since {layout.year:04d}-01-01",
            "calendar": "proleptic_gregorian",
        },
    )
    await day.setitem(slice(None), np.arange(n_days, dtype="int64"))


def check_continuous(attrs: Mapping[str, Any], layout: ContinuousLayout) -> None:
    """Refuse a channel-year whose sampling rate differs from what the writer expects."""
    rate = float(attrs.get("sampling_rate", np.nan))
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
    group = root.require_group(name)
    group.attrs.update(layout.attrs())
    n = layout.n_samples
    group.create_array(
        "waveform",
        shape=(0, len(COMPONENTS), n),
        chunks=(1, len(COMPONENTS), n),
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
        "component", shape=(len(COMPONENTS),), dtype="str", dimension_names=("component",)
    )
    comp[:] = np.array(COMPONENTS)
    offs = group.create_array(
        "time",
        shape=(n,),
        dtype="float64",
        fill_value=np.nan,
        dimension_names=("sample",),
        attributes={"units": "s", "long_name": "time after reference_time"},
    )
    offs[:] = np.arange(n) / layout.sampling_rate - layout.pre_s
    for coord, (dtype, fill, attrs) in _trace_coords(name).items():
        # Variables written per trace by concurrent tasks get one chunk per trace, so no two
        # writers ever share a chunk; the rest is written once, under the lock, at planning.
        chunk = 1 if coord in PER_TRACE_WRITES else 4096
        group.create_array(
            coord,
            shape=(0,),
            chunks=(chunk,),
            dtype=dtype,
            fill_value=fill,
            dimension_names=("trace",),
            attributes=attrs,
        )
    group.attrs["coordinates"] = " ".join(_trace_coords(name))
    return group


def append_traces(group: zarr.Group, rows: Sequence[Mapping[str, Any]]) -> range:
    """Append trace coordinate rows (call under the store lock); return their indices.

    The waveform grows with them, filled with NaN (fill chunks are not written).
    """
    keys = group["trace_key"]
    assert isinstance(keys, zarr.Array)
    start = int(keys.shape[0])
    stop = start + len(rows)
    extras = {k: v for more in EXTRA_TRACE_COORDS.values() for k, v in more.items() if k in group}
    for name, (dtype, _fill, _attrs) in {**TRACE_COORDS, **extras}.items():
        arr = group[name]
        assert isinstance(arr, zarr.Array)
        arr.resize((stop,))
        values = [row[name] for row in rows]
        arr[start:stop] = np.array(values, dtype=object if dtype == "str" else dtype)
    wave = group["waveform"]
    assert isinstance(wave, zarr.Array)
    wave.resize((stop, *wave.shape[1:]))
    return range(start, stop)


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
        a = group.create_array(name, shape=(len(col),), dtype="str", dimension_names=("feature",))
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
