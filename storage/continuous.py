"""Writes and reads of continuous channel-day data (layout in :mod:`storage.schema`).

Samples live in one array per channel (``continuous/{NSLC}``), one shard per channel-day,
written through zarr's public array API and read back by decoding the day's shard per the
Zarr v3 sharding specification (:mod:`storage.shardread`; zarr's read where it cannot).
What is known about each day (its grid start time, recorded runs, source segments, flags,
source files and the completion time) is a row of ``tables/channel_days``:
:class:`DayLedger` reads it, and the ingest appends it once the day's shard is written.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd
import zarr
from seismoflow.storage.documents import RunDocuments
from seismoflow.storage.fsio import delete, store_location, write_bytes
from seismoflow.storage.schema import (
    ContinuousLayout,
    SchemaError,
    continuous_path,
    day_index,
    describe_flags,
    layout_from_attrs,
)
from seismoflow.storage.shardread import (
    Objects,
    ShardReader,
    read_document,
    reader_from_metadata,
    shard_reader,
    store_objects,
)
from seismoflow.storage.tables import read_records, read_table
from zarr.storage import LocalStore, MemoryStore, StorePath

from seismoflow.ids import ChannelId
from seismoflow.times import NAT, NS_PER_DAY, NS_PER_S, rate_fraction

LEDGER = "channel_days"
# ``sources`` of a day being rewritten: a day killed mid-rewrite is redone whole, never
# merged with what its shard held.
WRITING = "writing"
JSON_COLUMNS = ("segments", "runs", "quarantine", "sources")
# What of an array's metadata decides the bytes of its shards.
ENCODING_KEYS = ("shape", "data_type", "chunk_grid", "chunk_key_encoding", "fill_value", "codecs")


@dataclass(frozen=True)
class DayRecord:
    """One channel-day as the ledger (``tables/channel_days``) records it."""

    channel: str
    day_ns: int
    sampling_rate: float
    starttime_ns: int
    n_samples: int
    flags: int
    segments: list[dict[str, Any]]
    quarantine: list[dict[str, Any]]
    ingested_at_ns: int
    sources: list[dict[str, Any]]
    runs: list[tuple[int, int]] = field(default_factory=list)
    state: str = ""  # the stored ``sources`` text: '' (none), 'writing' or the JSON list

    def as_row(self) -> dict[str, Any]:
        """The ledger row of this day (every column of ``tables/channel_days``)."""
        first, last = extent(self.segments, self.sampling_rate)
        return {
            "channel": self.channel,
            "day_ns": self.day_ns,
            "sampling_rate": self.sampling_rate,
            "starttime_ns": self.starttime_ns,
            "n_samples": self.n_samples,
            "flags": self.flags,
            "flag_names": ",".join(describe_flags(int(self.flags))),
            "n_segments": len(self.segments),
            "first_ns": first,
            "last_ns": last,
            "ingested_at_ns": self.ingested_at_ns,
            "segments": json.dumps(self.segments, sort_keys=True),
            "runs": json.dumps([list(r) for r in self.runs]),
            "quarantine": json.dumps(self.quarantine, sort_keys=True),
            "sources": self.state or json.dumps(self.sources, sort_keys=True),
        }


def writing_row(channel: str, day_ns: int, sampling_rate: float) -> dict[str, Any]:
    """The ledger row that marks a day as being rewritten (appended before its shard is)."""
    rec = DayRecord(channel, day_ns, sampling_rate, NAT, 0, 0, [], [], NAT, [], [], WRITING)
    return rec.as_row()


def extent(segments: list[dict[str, Any]], rate: float) -> tuple[int, int]:
    """Exact times of the first and last recorded samples, from the segment list."""
    if not segments:
        return NAT, NAT
    period = NS_PER_S / rate_fraction(rate)
    first = min(int(s["start_ns"]) for s in segments)
    last = max(int(s["start_ns"]) + round((int(s["npts"]) - 1) * period) for s in segments)
    return first, last


def built_from(done: int, state: str, sources: list[dict[str, Any]]) -> bool:
    """Whether a day's ledger ``(ingested_at, sources)`` says it is complete and was built
    from every one of ``sources`` (path, size, mtime)."""
    if done == NAT or state in ("", WRITING):
        return False
    have = {json.dumps(s, sort_keys=True) for s in json.loads(state)}
    return all(json.dumps(s, sort_keys=True) in have for s in sources)


def _loads(text: Any) -> list[Any]:
    text = str(text) if text is not None else ""
    return json.loads(text) if text and text != WRITING else []


def record_from_row(row: dict[str, Any]) -> DayRecord:
    return DayRecord(
        channel=str(row["channel"]),
        day_ns=int(row["day_ns"]),
        sampling_rate=float(row["sampling_rate"]),
        starttime_ns=int(row["starttime_ns"]),
        n_samples=int(row["n_samples"]),
        flags=int(row["flags"]),
        segments=_loads(row.get("segments")),
        quarantine=_loads(row.get("quarantine")),
        ingested_at_ns=int(row["ingested_at_ns"]),
        sources=_loads(row.get("sources")),
        runs=[(int(a), int(b)) for a, b in _loads(row.get("runs"))],
        state=str(row.get("sources") or ""),
    )


class DayLedger:
    """``tables/channel_days`` by channel and day, read once."""

    def __init__(self, location: str, channels: Iterable[str] | None = None) -> None:
        wanted = None if channels is None else set(channels)
        self.rows: dict[tuple[str, int], DayRecord] = {}
        for row in read_records(location, LEDGER):
            if wanted is None or row["channel"] in wanted:
                rec = record_from_row(row)
                self.rows[(rec.channel, rec.day_ns)] = rec

    def get(self, channel: str, day_ns: int) -> DayRecord | None:
        return self.rows.get((channel, int(day_ns)))

    def state(self, channel: str, day_ns: int) -> tuple[int, str]:
        """``(ingested_at, sources)``: ``''`` if never written, ``'writing'`` while (or if
        a killed run left it) being rewritten, else the JSON list of its source files."""
        rec = self.get(channel, day_ns)
        return (NAT, "") if rec is None else (rec.ingested_at_ns, rec.state)


@dataclass
class Piece:
    """A contiguous run of recorded samples with its exact start time."""

    channel: ChannelId
    start_ns: int
    sampling_rate: float
    data: np.ndarray


def runs_of(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` index pairs of the True runs of ``mask``."""
    edges = np.diff(
        np.concatenate((np.zeros(1, np.int8), mask.view(np.int8), np.zeros(1, np.int8)))
    )
    starts = np.flatnonzero(edges == 1)
    stops = np.flatnonzero(edges == -1)
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def _segment_runs(segments: list[dict[str, Any]], samples_per_day: int) -> list[tuple[int, int]]:
    """``[start, stop)`` grid runs covered by ``segments`` (records without ``runs``)."""
    spans = sorted(
        (max(0, int(s["index"])), min(samples_per_day, int(s["index"]) + int(s["npts"])))
        for s in segments
    )
    runs: list[tuple[int, int]] = []
    for a, b in spans:
        if b <= a:
            continue
        if runs and a <= runs[-1][1]:
            runs[-1] = (runs[-1][0], max(runs[-1][1], b))
        else:
            runs.append((a, b))
    return runs


def _run_start_ns(t0: int, run_start: int, segments: list[dict[str, Any]], rate: float) -> int:
    """Exact time of grid sample ``run_start``: from the source segment that holds it."""
    period = 1 / rate_fraction(rate) * 1_000_000_000
    for seg in sorted(segments, key=lambda s: int(s["index"])):
        index, npts = int(seg["index"]), int(seg["npts"])
        if index <= run_start < index + npts:
            return int(seg["start_ns"]) + round((run_start - index) * period)
    return t0 + round(run_start * period)


class ChannelArray:
    """One channel's array: writes whole channel-days, reads recorded samples back."""

    def __init__(
        self,
        array: zarr.Array,
        layout: ContinuousLayout | None = None,
        run: RunDocuments | None = None,
    ) -> None:
        self._array: zarr.Array | None = array
        self._open: Callable[[], zarr.Array] | None = None
        self._node = array.path
        self._run = run
        self.layout = layout or layout_from_attrs(array.attrs.asdict())
        self.samples_per_day = self.layout.samples_per_day
        self.chunk_samples = int(self.layout.chunk_samples)
        self.width = int(array.shape[1])
        # Decodes shards by the sharding specification; None: read through zarr instead.
        self.shards: ShardReader | None = shard_reader(array)
        self._encoded: dict[str, Any] = {}  # shards encoded by the mirror, until written
        self._mirrored: tuple[zarr.Array | None] | None = None
        self._guard = threading.Lock()

    @classmethod
    def from_document(
        cls,
        document: dict[str, Any],
        objects: Objects,
        open_array: Callable[[], zarr.Array],
        node: str,
        run: RunDocuments | None = None,
    ) -> ChannelArray:
        """The channel array of ``zarr.json`` ``document`` at ``node`` (its path in the
        store), read by :mod:`storage.shardread`; zarr opens the array (``open_array``) only
        when it is written, or read where the shard reader does not handle its encoding.
        Opening an array through zarr costs a few ms, as much as decoding a small file's
        samples. ``run``: a run whose kept shards reads use (:mod:`storage.documents`)."""
        self = cls.__new__(cls)
        self._array = None
        self._open = open_array
        self._node = node.strip("/")
        self._run = run
        self.layout = layout_from_attrs(document["attributes"])
        self.samples_per_day = self.layout.samples_per_day
        self.chunk_samples = int(self.layout.chunk_samples)
        self.width = int(document["shape"][1])
        self.shards = reader_from_metadata(document, objects)
        self._encoded = {}
        self._mirrored = None
        self._guard = threading.Lock()
        return self

    @property
    def array(self) -> zarr.Array:
        """The channel's zarr array (opened on first use)."""
        if self._array is None:
            assert self._open is not None
            self._array = self._open()
        return self._array

    def write_day(
        self,
        day_ns: int,
        *,
        t0_ns: int,
        offset: int,
        data: np.ndarray,
        mask: np.ndarray,
        flags: int,
        segments: list[dict[str, Any]],
        quarantine: list[dict[str, Any]],
        sources: list[dict[str, Any]],
        fresh: bool = False,
    ) -> DayRecord:
        """Write one channel-day's shard; return its ledger record (completion time set).

        ``data``/``mask`` hold grid samples ``offset .. offset + len``; unrecorded samples
        are stored as 0 and the record's ``runs`` say which are recorded, so a gap is never
        a silent zero. With ``fresh`` (the day has no shard yet) only the inner chunks that
        hold samples are written; otherwise the whole day is. Either way the day's shard is
        replaced whole (:meth:`_write_shard`), so no stale chunk survives.
        The caller appends the record to the ledger after this returns.
        """
        layout = self.layout
        spd = self.samples_per_day
        if data.dtype != np.int32 or mask.dtype != np.bool_ or data.shape != mask.shape:
            raise SchemaError(
                f"{layout.path}: day data must be int32 with a bool mask of the same shape, "
                f"got {data.dtype}{data.shape} and {mask.dtype}{mask.shape}"
            )
        if offset < 0 or offset + data.size > spd:
            raise SchemaError(
                f"{layout.path}: samples {offset}..{offset + data.size} fall "
                f"outside the day's {spd} samples"
            )
        d = day_index(day_ns)
        cs = self.chunk_samples
        n_recorded = int(np.count_nonzero(mask))
        if fresh and n_recorded == 0:
            lo = hi = 0
        elif fresh:
            lo, hi = offset // cs * cs, min(self.width, -(-(offset + data.size) // cs) * cs)
        else:
            lo, hi = 0, self.width
        written: tuple[str, bytes] | None = None
        if hi > lo:
            block = np.zeros(hi - lo, dtype=np.int32)
            region = slice(offset - lo, offset - lo + data.size)
            block[region] = data
            if n_recorded < mask.size:
                block[region][~mask] = 0
            written = self._write_shard(d, lo, hi, block)
        runs = [(a + offset, b + offset) for a, b in runs_of(mask)]
        record = DayRecord(
            channel=layout.channel.nslc,
            day_ns=int(day_ns),
            sampling_rate=float(layout.sampling_rate),
            starttime_ns=int(t0_ns),
            n_samples=n_recorded,
            flags=int(flags),
            segments=segments,
            quarantine=quarantine,
            ingested_at_ns=time.time_ns(),
            sources=sources,
            runs=runs,
        )
        if written is not None and self._run is not None:
            self._run.keep_shard(written[0], record.day_ns, record.ingested_at_ns, written[1])
        return record

    def _write_shard(
        self, d: int, lo: int, hi: int, block: np.ndarray
    ) -> tuple[str, bytes] | None:
        """Write samples ``lo:hi`` of row ``d`` as the row's whole shard, one object.

        zarr writes into a sharded array by reading the stored shard first and merging: on
        an object store a request per channel-day that, for a new day, finds nothing. So
        zarr encodes the shard into a store in memory, through an array of this one's shape
        and codecs that holds no other shard, and the object is put into the store as is
        (or deleted where zarr would: nothing but fill values). Arrays whose codecs the
        copy does not reproduce are written through zarr. Returns the object's path in the
        store and its bytes when it put one.
        """
        mirror = self._mirror()
        if mirror is None:
            self.array[d, lo:hi] = block
            return None
        key = self.array.metadata.encode_chunk_key((d, 0))
        mirror[d, lo:hi] = block
        shard = self._encoded.pop(key, None)
        location = store_location(self.array)
        path = f"{self.array.path}/{key}"
        if shard is None:
            delete(location, path)
            return None
        raw = shard.to_bytes()
        write_bytes(location, path, raw)
        return path, raw

    def _mirror(self) -> zarr.Array | None:
        """An array in memory with this one's shape, chunks and codecs (``None`` if it
        would not encode shards the same)."""
        with self._guard:
            if self._mirrored is None:
                arr = self.array
                theirs = arr.metadata.to_dict()
                if arr.metadata.zarr_format != 3 or arr.serializer is None:
                    self._mirrored = (None,)
                    return None
                mirror = zarr.create_array(
                    MemoryStore(self._encoded),
                    shape=arr.shape,
                    chunks=arr.chunks,
                    shards=arr.shards,
                    dtype=arr.dtype,
                    fill_value=arr.fill_value,
                    filters=arr.filters,
                    serializer=arr.serializer,
                    compressors=arr.compressors,
                    chunk_key_encoding=dict(cast(dict[str, Any], theirs["chunk_key_encoding"])),
                )
                ours = mirror.metadata.to_dict()
                same = all(theirs.get(k) == ours.get(k) for k in ENCODING_KEYS)
                self._mirrored = (mirror,) if same else (None,)
            return self._mirrored[0]

    def read(
        self,
        day_ns: int,
        lo: int,
        hi: int,
        max_bytes: int | None = None,
        ingested_at_ns: int | None = None,
    ) -> np.ndarray:
        """Grid samples ``lo:hi`` of a day (zeros where nothing was recorded), decoded from
        the day's shard by :mod:`storage.shardread` (zarr's public read for an array whose
        encoding it does not handle). ``max_bytes``: a bound on the shard's size, if known
        (:func:`shard_bound`); ``ingested_at_ns``: the completion time of the day's ledger
        record, if known (a shard this run wrote for that record is decoded from memory)."""
        if self.shards is not None:
            d = day_index(day_ns)
            if self._run is not None and ingested_at_ns is not None:
                kept = self._run.shard(f"{self._node}/{self.shards.key(d)}", ingested_at_ns)
                if kept is not None:
                    return self.shards.read_shard(kept, lo, hi)
            return self.shards.read(d, lo, hi, max_bytes)
        return np.asarray(self.array[day_index(day_ns), lo:hi], dtype=np.int32)

    def stored_segments(self, rec: DayRecord, sources: set[str]) -> list[tuple[str, Piece]]:
        """Recorded samples of day ``rec`` that came from ``sources``, with exact start times."""
        period_ns = NS_PER_S / rate_fraction(rec.sampling_rate)
        out = []
        for seg in rec.segments:
            if seg["source"] not in sources:
                continue
            start = int(seg["start_ns"])
            end = start + round((int(seg["npts"]) - 1) * period_ns)
            out += [(str(seg["source"]), p) for p in self.pieces(rec, start, end)]
        return out

    def pieces(self, rec: DayRecord, start_ns: int, end_ns: int) -> list[Piece]:
        """Recorded samples of the day ``rec`` with times in ``[start_ns, end_ns]``, as
        pieces split at gaps and at every source segment's start (exact start times)."""
        if rec.ingested_at_ns == NAT or rec.n_samples == 0:
            return []
        rate = float(self.layout.sampling_rate)
        fr = rate_fraction(rate)
        spd = self.samples_per_day
        t0 = rec.starttime_ns
        # One sample of slack each side: a segment that started off the grid has exact times
        # up to half a sample from its grid times; pieces are trimmed on exact times below.
        lo = max(0, int(-(-(start_ns - t0) * fr // NS_PER_S)) - 1)
        hi = min(spd, int((end_ns - t0) * fr // NS_PER_S) + 2)
        if lo >= hi:
            return []
        runs = rec.runs or _segment_runs(rec.segments, spd)
        local = [(max(a, lo) - lo, min(b, hi) - lo) for a, b in runs if a < hi and b > lo]
        if not local:
            return []
        # Read only the span the runs cover.
        a_min = min(a for a, _ in local)
        b_max = max(b for _, b in local)
        data = self.read(
            rec.day_ns, lo + a_min, lo + b_max, shard_bound(rec), rec.ingested_at_ns
        )
        # Split runs at every segment start so off-grid starts keep their exact times.
        cuts = sorted({int(s["index"]) - lo for s in rec.segments if lo < int(s["index"]) < hi})
        out: list[Piece] = []
        channel = self.layout.channel
        for a0, b0 in local:
            bounds = [a0, *[c for c in cuts if a0 < c < b0], b0]
            for x, y in zip(bounds[:-1], bounds[1:], strict=True):
                start = _run_start_ns(t0, lo + x, rec.segments, rate)
                piece = _trim(
                    Piece(channel, start, rate, data[x - a_min : y - a_min]), start_ns, end_ns
                )
                if piece is not None:
                    out.append(piece)
        return out


# Bytes of a shard beyond its samples' (the index, codec headers): generous for pcodec and
# blosc, whose stored chunks are smaller than the raw int32 values they hold.
SHARD_OVERHEAD_BYTES = 64 * 1024


def shard_bound(rec: DayRecord) -> int:
    """A bound, in bytes, on the size of the shard of day ``rec``, from its recorded samples
    (4 bytes each, what int32 takes uncompressed: the codecs store less), used to choose how
    to read the shard, never to read it."""
    return 4 * int(rec.n_samples) + SHARD_OVERHEAD_BYTES


def open_channel(
    root: zarr.Group, channel: ChannelId, rate: float, documents: RunDocuments | None = None
) -> ChannelArray | None:
    """The channel's array at ``rate`` (``None`` if the store has none).

    With a run's ``documents`` (:mod:`storage.documents`), the array's ``zarr.json`` is read
    from the store at most once per run; zarr then opens the array from that document
    (``zarr.Array.from_dict``) without reading it again. On a store other than a local
    folder the channel also keeps the shards it writes in the run's documents, and reads
    them back from there.
    """
    path = continuous_path(channel, rate)

    def open_array() -> zarr.Array:
        arr = root[path]
        if not isinstance(arr, zarr.Array):
            raise SchemaError(f"{path} is a group, not a channel's array")
        return arr

    node = f"{root.path}/{path}".lstrip("/")
    objects = store_objects(root.store, node)
    if objects is not None:
        doc = documents.get(node) if documents is not None else None
        if doc is None:
            doc = read_document(objects)
            if doc is None or doc.get("node_type") != "array":
                return None
            if documents is not None:
                documents.remember({node: doc})
        known = doc

        def from_document() -> zarr.Array:
            return zarr.Array.from_dict(StorePath(root.store, node), copy.deepcopy(known))

        run = None if isinstance(root.store, LocalStore) else documents
        return ChannelArray.from_document(doc, objects, from_document, node, run)
    try:
        return ChannelArray(open_array())
    except (KeyError, SchemaError):
        return None


class ContinuousReader:
    """Reads recorded samples back, caching the ledger and open channels across calls."""

    def __init__(
        self,
        root: zarr.Group,
        ledger: DayLedger | None = None,
        documents: RunDocuments | None = None,
    ) -> None:
        self.root = root
        self._ledger = ledger
        self._documents = documents
        self._channels: dict[tuple[str, float], ChannelArray | None] = {}

    @property
    def ledger(self) -> DayLedger:
        if self._ledger is None:
            self._ledger = DayLedger(store_location(self.root))
        return self._ledger

    def channel(self, channel: ChannelId, rate: float) -> ChannelArray | None:
        key = (channel.nslc, float(rate))
        if key not in self._channels:
            self._channels[key] = open_channel(self.root, channel, rate, self._documents)
        return self._channels[key]

    def pieces(self, channel: ChannelId, start_ns: int, end_ns: int) -> list[Piece]:
        """Recorded samples of ``channel`` with times in ``[start_ns, end_ns]``, as pieces.

        Pieces split at gaps, at day boundaries where the grid phase changes, and where a
        source segment started off the grid; start times are the source's exact times.
        """
        pieces: list[Piece] = []
        # A day's grid holds only samples of that day, so no earlier day is read.
        day = (start_ns // NS_PER_DAY) * NS_PER_DAY
        while day <= end_ns:
            rec = self.ledger.get(channel.nslc, day)
            if rec is not None and rec.n_samples and rec.ingested_at_ns != NAT:
                handle = self.channel(channel, rec.sampling_rate)
                if handle is not None:
                    pieces.extend(handle.pieces(rec, start_ns, end_ns))
            day += NS_PER_DAY
        return _merge_adjacent(pieces)


def read_pieces(root: zarr.Group, channel: ChannelId, start_ns: int, end_ns: int) -> list[Piece]:
    """One-off :meth:`ContinuousReader.pieces`."""
    return ContinuousReader(root).pieces(channel, start_ns, end_ns)


def stored_channels(location: str) -> list[str]:
    """``NET.STA.LOC.CHA`` of every channel with a channel-day in the store, sorted."""
    days = read_table(location, LEDGER)
    return sorted(set(days["channel"].astype(str))) if len(days) else []


def ledger_frame(records: Sequence[DayRecord]) -> pd.DataFrame:
    return pd.DataFrame([r.as_row() for r in records])


# Request bounds are honoured to within a microsecond: ObsPy and miniSEED times carry
# microseconds, so the time of a last sample at 120 Hz is rounded by up to 0.5 us.
TIME_TOLERANCE_NS = 1_000


def _trim(piece: Piece, start_ns: int, end_ns: int) -> Piece | None:
    """The samples of ``piece`` whose exact times lie in ``[start_ns, end_ns]`` (+- 1 us)."""
    fr = rate_fraction(piece.sampling_rate)
    lo = start_ns - TIME_TOLERANCE_NS - piece.start_ns
    hi = end_ns + TIME_TOLERANCE_NS - piece.start_ns
    first = max(0, int(-(-lo * fr // 1_000_000_000)))
    last = min(piece.data.size - 1, int(hi * fr // 1_000_000_000))
    if last < first:
        return None
    start = piece.start_ns + round(first * 1_000_000_000 / fr)
    data = piece.data[first : last + 1]
    # A small piece of a larger read is copied so it does not keep the whole read alive.
    base = data.base if isinstance(data.base, np.ndarray) else data
    return Piece(
        piece.channel,
        start,
        piece.sampling_rate,
        data.copy() if 2 * data.size < base.size else data,
    )


def _merge_adjacent(pieces: list[Piece]) -> list[Piece]:
    """Join pieces that continue each other exactly (e.g. across midnight)."""
    merged: list[Piece] = []
    for p in sorted(pieces, key=lambda p: p.start_ns):
        if merged:
            q = merged[-1]
            expected = q.start_ns + round(
                q.data.size * 1_000_000_000 / rate_fraction(q.sampling_rate)
            )
            if q.sampling_rate == p.sampling_rate and abs(p.start_ns - expected) <= 1_000:
                q.data = np.concatenate([q.data, p.data])
                continue
        merged.append(p)
    return merged
