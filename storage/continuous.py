"""Region writes and reads of continuous channel-day data (layout in :mod:`storage.schema`)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numpy as np
import zarr
from numcodecs import Blosc, PCodec, VLenUTF8, Zstd
from seismoflow.storage.chunkio import put_chunks, read_chunks, write_chunks
from seismoflow.storage.schema import (
    CONTINUOUS,
    ContinuousLayout,
    SchemaError,
    layout_from_attrs,
    layout_shape,
    template_documents,
)
from zarr.core.array import AsyncArray
from zarr.core.buffer import default_buffer_prototype
from zarr.core.metadata import ArrayV3Metadata
from zarr.core.sync import sync
from zarr.storage import StorePath

from seismoflow.ids import ChannelId
from seismoflow.times import NAT, NS_PER_DAY, NS_PER_S, rate_fraction

# The per-day variables of a channel-year (one chunk of one element per day).
DAY_VARIABLES = (
    "starttime",
    "n_samples",
    "flags",
    "segments",
    "quarantine",
    "sources",
    "ingested_at",
)


@dataclass(frozen=True)
class DayRecord:
    """What the ledger and per-day variables say about one stored channel-day."""

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

    def as_row(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "day_ns": self.day_ns,
            "sampling_rate": self.sampling_rate,
            "starttime_ns": self.starttime_ns,
            "n_samples": self.n_samples,
            "flags": self.flags,
            "n_segments": len(self.segments),
            "ingested_at_ns": self.ingested_at_ns,
        }


# ``sources`` of a day being written: a killed write is redone whole, never merged.
WRITING = "writing"


def built_from(done: int, state: str, sources: list[dict[str, Any]]) -> bool:
    """Whether a day's ledger ``(ingested_at, sources)`` says it is complete and was built
    from every one of ``sources`` (path, size, mtime)."""
    if done == NAT or state in ("", WRITING):
        return False
    have = {json.dumps(s, sort_keys=True) for s in json.loads(state)}
    return all(json.dumps(s, sort_keys=True) in have for s in sources)


_ZSTD0 = {"name": "zstd", "configuration": {"level": 0, "checksum": False}}
_RAW_CODECS: dict[str, list[dict[str, Any]]] = {
    "int64": [{"name": "bytes", "configuration": {"endian": "little"}}, _ZSTD0],
    "uint32": [{"name": "bytes", "configuration": {"endian": "little"}}, _ZSTD0],
    "string": [{"name": "vlen-utf8", "configuration": {}}, _ZSTD0],
}
_ZSTD = Zstd(level=0, checksum=False)
_PCODEC = PCodec()  # decoding needs no settings: pcodec's format describes itself
_BLOSC = Blosc()
_VLEN = VLenUTF8()
_PROTO = default_buffer_prototype()
_LITTLE = {"name": "bytes", "configuration": {"endian": "little"}}


class LazyArray:
    """An array's metadata and location; its zarr ``AsyncArray`` is built on first use.

    Building one sets up its codec pipeline (~0.1 ms), a channel-year has nine arrays, and
    reads and writes of the schema's pipelines never use it (they go through
    :class:`DayVariable` and :class:`SampleRows`): opening a channel-year to read one event
    snippet cost more than decoding it."""

    def __init__(self, metadata: ArrayV3Metadata, store_path: StorePath) -> None:
        self.metadata = metadata
        self.store_path = store_path
        self._array: AsyncArray[Any] | None = None

    @property
    def async_array(self) -> AsyncArray[Any]:
        if self._array is None:
            self._array = AsyncArray(metadata=self.metadata, store_path=self.store_path)
        return self._array


ArrayRef = zarr.Array | AsyncArray[Any] | LazyArray


def _async(array: ArrayRef) -> AsyncArray[Any]:
    return array if isinstance(array, AsyncArray) else array.async_array


class DayVariable:
    """One per-day variable of a channel-year, read and written one whole chunk (one day) at a
    time straight through the store.

    zarr's array path costs ~0.5 ms of CPU per element (selection, codec pipeline, empty-chunk
    check), and a channel-day has seven of these; encoding the few bytes here, with the
    codecs the schema gives these arrays (checked on opening; any other array goes through
    zarr), costs ~0.02 ms. As zarr does, a value equal to the fill value is stored as no chunk.
    """

    def __init__(self, array: ArrayRef) -> None:
        self._ref = array
        meta: Any = array.metadata
        doc = _meta_doc(meta)
        dtype = str(doc.get("data_type"))
        self.raw = (
            isinstance(meta, ArrayV3Metadata)
            and tuple(meta.chunks) == (1,)
            and list(doc.get("codecs", ())) == _RAW_CODECS.get(dtype)
        )
        self.is_str = dtype == "string"
        self.dtype = None if self.is_str else np.dtype(dtype).newbyteorder("<")
        fill = meta.fill_value
        self.fill: Any = str(fill) if self.is_str else int(fill)
        self.meta = meta
        self.store = array.store_path.store
        self.path = array.store_path.path

    @property
    def array(self) -> AsyncArray[Any]:
        """The zarr array, for pipelines this class does not encode itself."""
        return _async(self._ref)

    def _key(self, d: int) -> str:
        return f"{self.path}/{self.meta.encode_chunk_key((d,))}"

    def parse(self, chunk: bytes | None) -> Any:
        """The value held by the stored chunk bytes (``None``: no chunk, the fill value)."""
        if chunk is None:
            return self.fill
        raw = _ZSTD.decode(chunk)
        if self.is_str:
            return str(_VLEN.decode(raw)[0])
        return int(np.frombuffer(raw, dtype=self.dtype)[0])

    async def get(self, d: int) -> Any:
        if not self.raw:
            return np.asarray(await self.array.getitem(d)).item()
        buf = await self.store.get(self._key(d), prototype=_PROTO)
        return self.parse(None if buf is None else buf.to_bytes())

    async def set(self, d: int, value: Any, fresh: bool = False) -> None:
        """Store ``value`` for day ``d``; ``fresh``: the day has no chunk yet (a fill value
        then needs no write at all)."""
        if not self.raw:
            await self.array.setitem(d, value)
            return
        chunk = self.encode(value)
        if chunk is None:
            if not fresh:
                await self.store.delete(self._key(d))
            return
        await self.store.set(self._key(d), _PROTO.buffer.from_bytes(chunk))

    def encode(self, value: Any) -> bytes | None:
        """The chunk bytes zarr stores for ``value`` (``None``: the fill value, no chunk)."""
        if value == self.fill:
            return None
        if self.is_str:
            raw = _VLEN.encode(np.array([value], dtype=object))
        else:
            raw = np.array([value], dtype=self.dtype).tobytes()
        return bytes(_ZSTD.encode(raw))


T = TypeVar("T")
_PER_META: dict[tuple[str, int], tuple[Any, Any]] = {}


def _per_meta(name: str, meta: Any, make: Callable[[Any], T]) -> T:
    """``make(meta)``, cached per array metadata object (channel-years of one layout share
    theirs, ``open_channel_year``); at most 4096 entries."""
    hit = _PER_META.get((name, id(meta)))
    if hit is not None and hit[0] is meta:
        return cast(T, hit[1])
    value = make(meta)
    if len(_PER_META) > 4096:
        _PER_META.clear()
    _PER_META[(name, id(meta))] = (meta, value)
    return value


def _meta_doc(meta: Any) -> dict[str, Any]:
    """``meta.to_dict()``, cached."""
    return _per_meta("doc", meta, lambda m: dict(m.to_dict()))


def _row_codec(meta: Any) -> tuple[str | None, Any, np.dtype[Any]]:
    """Which of the schema's sample pipelines ``meta`` uses (``None``: another one), the
    numcodecs codec that encodes its chunks, and its dtype; cached per metadata object."""
    return _per_meta("rows", meta, _find_row_codec)


def _find_row_codec(meta: Any) -> tuple[str | None, Any, np.dtype[Any]]:
    doc = _meta_doc(meta)
    codecs = list(doc.get("codecs", ()))
    names = [c.get("name") for c in codecs]
    config = [dict(c.get("configuration") or {}) for c in codecs]
    kind: str | None = None
    encoder: Any = None
    dtype = str(doc.get("data_type"))
    if len(meta.chunks) == 2 and dtype == "int32":
        if names == ["numcodecs.pcodec"]:
            kind, encoder = "pcodec", PCodec(**config[0])
        elif names == ["numcodecs.delta", "bytes", "blosc"] and codecs[1] == _LITTLE:
            blosc = config[2]
            shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[blosc["shuffle"]]
            kind, encoder = "delta-zstd", Blosc.from_config({**blosc, "shuffle": shuffle})
    elif len(meta.chunks) == 2 and dtype == "bool" and names == ["bytes", "zstd"]:
        kind, encoder = "mask-zstd", Zstd(**config[1])
    return kind, encoder, np.dtype(dtype)


class WholeChunks:
    """Encodes whole chunks of an array stored as little-endian bytes + zstd (the schema's
    per-trace arrays), as zarr encodes them: ``None`` for a chunk of fill values only (NaN
    included), which zarr stores as no chunk. ``direct`` is False for any other pipeline."""

    def __init__(self, array: zarr.Array | AsyncArray[Any]) -> None:
        self.array = array.async_array if isinstance(array, zarr.Array) else array
        meta = self.array.metadata
        doc = _meta_doc(meta)
        codecs = list(doc.get("codecs", ()))
        self.direct = (
            isinstance(meta, ArrayV3Metadata)
            and len(codecs) == 2
            and codecs[0] == _LITTLE
            and codecs[1].get("name") == "zstd"
            and str(doc.get("data_type")) in ("float32", "float64", "int32", "int64", "uint32")
        )
        self.codec = Zstd(**codecs[1].get("configuration", {})) if self.direct else None
        self.dtype = np.dtype(str(doc.get("data_type"))).newbyteorder("<") if self.direct else None
        self.shape = tuple(int(n) for n in meta.chunks)
        self.fill = meta.fill_value
        self.store = self.array.store_path.store
        self.path = self.array.store_path.path

    def encode(self, coords: tuple[int, ...], value: Any) -> tuple[str, bytes | None]:
        """``(key, bytes)`` of the chunk at ``coords`` holding ``value`` (broadcast to it)."""
        assert self.codec is not None and self.dtype is not None
        key = f"{self.path}/{self.array.metadata.encode_chunk_key(coords)}"
        block = np.broadcast_to(np.asarray(value, dtype=self.dtype), self.shape)
        fill = np.asarray(self.fill, dtype=self.dtype)
        if bool(np.isnan(block).all() if np.isnan(fill) else (block == fill).all()):
            return key, None
        return key, bytes(self.codec.encode(np.ascontiguousarray(block).tobytes()))


class SampleRows:
    """Reads and writes ranges of one day's ``data`` (or ``mask``) row straight as chunk bytes.

    zarr's read path hands each chunk to a thread pool and back through the event loop,
    which costs 1.5-2.5x the decoding itself on one core (BENCHMARKS.md). The two pipelines
    the schema writes (``pcodec``; ``delta-zstd``: delta, little-endian bytes, blosc) are
    decoded here with their numcodecs codecs, in the calling thread, into the output array;
    any other pipeline goes through zarr.
    """

    def __init__(self, array: ArrayRef) -> None:
        self._ref = array
        meta: Any = array.metadata
        self.meta = meta
        self.kind, self.encoder, self.dtype = _row_codec(meta)
        self.chunk = int(meta.chunks[1])
        self.width = int(meta.shape[1])
        self.fill = meta.fill_value
        self.store = array.store_path.store
        self.path = array.store_path.path

    @property
    def array(self) -> AsyncArray[Any]:
        """The zarr array, for pipelines this class does not decode itself."""
        return _async(self._ref)

    def _key(self, d: int, c: int) -> str:
        return f"{self.path}/{self.meta.encode_chunk_key((d, c))}"

    def encode(self, d: int, lo: int, block: np.ndarray) -> list[tuple[str, bytes | None]]:
        """The chunks of day ``d`` holding samples ``lo .. lo + len(block)`` (a whole number
        of chunks, or up to the row's end), encoded as zarr encodes them: ``None`` for a chunk
        of fill values only, which zarr stores as no chunk."""
        cs = self.chunk
        if lo % cs or not (lo + block.size == self.width or block.size % cs == 0):
            raise SchemaError(f"{self.path}: region {lo}+{block.size} is not chunk-aligned")
        out: list[tuple[str, bytes | None]] = []
        for a in range(0, block.size, cs):
            part = block[a : a + cs]
            if part.size < cs:  # the row's last chunk, padded with the fill value as zarr does
                part = np.concatenate([part, np.full(cs - part.size, self.fill, self.dtype)])
            key = self._key(d, (lo + a) // cs)
            if not part.any() if self.fill in (0, False) else bool((part == self.fill).all()):
                out.append((key, None))
            elif self.kind == "pcodec":
                out.append((key, bytes(self.encoder.encode(part))))
            elif self.kind == "delta-zstd":
                deltas = np.empty_like(part)
                deltas[0] = part[0]
                np.subtract(part[1:], part[:-1], out=deltas[1:])
                out.append((key, bytes(self.encoder.encode(deltas.astype("<i4").view(np.uint8)))))
            else:  # mask-zstd
                out.append((key, bytes(self.encoder.encode(part.view(np.uint8)))))
        return out

    async def put(self, encoded: list[tuple[str, bytes | None]], fresh: bool) -> None:
        """Store what :meth:`encode` made; a chunk of fill values is deleted unless ``fresh``."""
        await put_chunks(self.store, encoded, fresh)

    @property
    def direct(self) -> bool:
        """Whether :meth:`decode` reads this array's chunks itself (else zarr does)."""
        return self.kind in ("pcodec", "delta-zstd")

    def keys(self, d: int, lo: int, hi: int) -> list[str]:
        """The chunks that hold samples ``lo:hi`` of day ``d``."""
        return [self._key(d, c) for c in range(lo // self.chunk, (hi - 1) // self.chunk + 1)]

    def read(self, d: int, lo: int, hi: int) -> np.ndarray:
        """Samples ``lo:hi`` of day ``d`` (zeros where nothing was recorded)."""
        if not self.direct:
            return np.asarray(sync(self.array.getitem((d, slice(lo, hi)))))
        raws = read_chunks(self.store, self.keys(d, lo, hi))
        return self.decode((lo // self.chunk, raws), lo, hi)

    def decode(self, fetched: tuple[int, list[bytes | None]], lo: int, hi: int) -> np.ndarray:
        """Samples ``lo:hi`` from ``(first chunk, its bytes and the next ones')``."""
        first, raws = fetched
        out = np.empty(hi - lo, dtype=np.int32)  # every part is written below
        cs = self.chunk
        scratch: np.ndarray | None = None
        for c, raw in enumerate(raws, start=first):
            a, b = max(lo, c * cs), min(hi, (c + 1) * cs)
            if raw is None:
                out[a - lo : b - lo] = int(self.fill)
                continue
            whole = a == c * cs and b == (c + 1) * cs
            if self.kind == "pcodec":
                if whole:
                    _PCODEC.decode(raw, out=out[a - lo : b - lo])
                    continue
                if scratch is None:
                    scratch = np.empty(cs, dtype=np.int32)
                _PCODEC.decode(raw, out=scratch)
                out[a - lo : b - lo] = scratch[a - c * cs : b - c * cs]
            else:  # delta-zstd: the deltas of a chunk restart at its first sample
                deltas = np.frombuffer(_BLOSC.decode(raw), dtype="<i4")
                values = np.cumsum(deltas[: b - c * cs], dtype=np.int32)
                out[a - lo : b - lo] = values[a - c * cs :]
        return out


class ChannelYear:
    """Handles to one channel-year's arrays, opened once and reused for its days."""

    def __init__(
        self,
        group: zarr.Group | None,
        layout: ContinuousLayout,
        arrays: dict[str, ArrayRef] | None = None,
    ) -> None:
        if arrays is None:
            assert group is not None
            arrays = {name: arr for name, arr in group.arrays() if isinstance(arr, zarr.Array)}
        self.arrays = arrays
        self.layout = layout
        # The stored chunking rules (a channel-year keeps the one it was created with).
        self.chunk_samples = int(arrays["data"].metadata.chunks[1])
        self.samples_per_day = int(arrays["data"].metadata.shape[1])
        self.vars = {name: DayVariable(arrays[name]) for name in DAY_VARIABLES}
        self.samples = SampleRows(arrays["data"])
        self.mask_rows = SampleRows(arrays["mask"])

    def _gather(self, *calls: Awaitable[Any]) -> list[Any]:
        async def _all() -> list[Any]:
            return list(await asyncio.gather(*calls))

        return list(sync(_all()))

    def ledger(self, day_ns: int) -> tuple[int, str]:
        """``(ingested_at, sources)`` of a day.

        ``sources`` is ``''`` if the day was never written, ``'writing'`` while (or if a
        killed run left it) being written, else the JSON list of its source files.
        """
        done, sources = self._values(self.layout.day_index(day_ns), ("ingested_at", "sources"))
        return int(done), str(sources)

    def _values(self, d: int, names: Sequence[str]) -> list[Any]:
        """Day ``d``'s values of the per-day variables ``names``, read in one call."""
        v = self.vars
        if all(v[n].raw for n in names):
            raws = read_chunks(self.samples.store, [v[n]._key(d) for n in names])
            return [v[n].parse(r) for n, r in zip(names, raws, strict=True)]
        return self._gather(*(v[n].get(d) for n in names))

    def is_done(self, day_ns: int, sources: list[dict[str, Any]]) -> bool:
        """True when the ledger marks this day complete and built from all of ``sources``."""
        return built_from(*self.ledger(day_ns), sources)

    def record(self, day_ns: int) -> DayRecord:
        """The per-day variables of one stored channel-day."""
        d = self.layout.day_index(day_ns)
        values = dict(zip(DAY_VARIABLES, self._values(d, DAY_VARIABLES), strict=True))
        return DayRecord(
            channel=self.layout.channel.nslc,
            day_ns=day_ns,
            sampling_rate=float(self.layout.sampling_rate),
            starttime_ns=int(values["starttime"]),
            n_samples=int(values["n_samples"]),
            flags=int(values["flags"]),
            segments=json.loads(values["segments"]) if values["segments"] else [],
            quarantine=json.loads(values["quarantine"]) if values["quarantine"] else [],
            ingested_at_ns=int(values["ingested_at"]),
            sources=json.loads(values["sources"]) if values["sources"] not in ("", WRITING) else [],
        )

    def stored_segments(self, rec: DayRecord, sources: set[str]) -> list[tuple[str, Piece]]:
        """Recorded samples of day ``rec`` that came from ``sources``, with exact start times."""
        period_ns = NS_PER_S / rate_fraction(rec.sampling_rate)
        out = []
        for seg in rec.segments:
            if seg["source"] not in sources:
                continue
            start = int(seg["start_ns"])
            end = start + round((int(seg["npts"]) - 1) * period_ns)
            out += [(str(seg["source"]), p) for p in self.pieces(rec.day_ns, start, end)]
        return out

    def pieces(self, day_ns: int, start_ns: int, end_ns: int) -> list[Piece]:
        """Recorded samples of day ``day_ns`` with times in ``[start_ns, end_ns]``, as pieces
        split at gaps and at every source segment's start (exact start times)."""
        d = self.layout.day_index(day_ns)
        rate = float(self.layout.sampling_rate)
        fr = rate_fraction(rate)
        spd = self.samples_per_day
        # The day's grid starts within a sample period after midnight: read the samples for
        # a grid at midnight with slack either side, together with the day's variables, in
        # one round trip; the exact range is cut out once the start time is known.
        lo0 = max(0, int((start_ns - day_ns) * fr // NS_PER_S) - 3)
        hi0 = min(spd, int((end_ns - day_ns) * fr // NS_PER_S) + 3)
        if lo0 >= hi0:
            return []
        v = self.vars
        names = ("ingested_at", "n_samples", "starttime", "segments")
        # Long requests (exports) may cover days never written: read their variables first.
        prefetch = hi0 - lo0 <= 4 * self.chunk_samples
        block: np.ndarray | None = None
        if all(v[n].raw for n in names) and self.samples.direct:
            keys = [v[n]._key(d) for n in names]
            keys += self.samples.keys(d, lo0, hi0) if prefetch else []
            raws = read_chunks(self.samples.store, keys)
            done, n_samples, t0, segments_raw = (
                v[n].parse(r) for n, r in zip(names, raws[:4], strict=True)
            )
            if prefetch and int(done) != NAT and int(n_samples):
                block = self.samples.decode((lo0 // self.chunk_samples, raws[4:]), lo0, hi0)
        else:
            done, n_samples, t0, segments_raw = self._gather(*(v[n].get(d) for n in names))
        if int(done) == NAT or int(n_samples) == 0:
            return []
        t0 = int(t0)
        # One sample of slack each side: a segment that started off the grid has exact times
        # up to half a sample from its grid times; pieces are trimmed on exact times below.
        lo = max(0, int(-(-(start_ns - t0) * fr // NS_PER_S)) - 1)
        hi = min(spd, int((end_ns - t0) * fr // NS_PER_S) + 2)
        if lo >= hi:
            return []
        if block is not None and lo0 <= lo and hi <= hi0:
            data = block[lo - lo0 : hi - lo0]
        else:  # not read yet, or a start time further from midnight than the schema makes
            data = self.samples.read(d, lo, hi)
        segments = json.loads(str(segments_raw)) if segments_raw else []
        runs = _segment_runs(segments, spd, int(n_samples))
        if runs is None:  # segments do not account for every sample: the mask does
            mask = np.asarray(sync(_async(self.arrays["mask"]).getitem((d, slice(lo, hi)))))
            local = _runs(mask)
        else:
            local = [(max(a, lo) - lo, min(b, hi) - lo) for a, b in runs if a < hi and b > lo]
        # Split runs at every segment start so off-grid starts keep their exact times.
        cuts = sorted({int(s["index"]) - lo for s in segments if lo < int(s["index"]) < hi})
        out: list[Piece] = []
        channel = self.layout.channel
        for a0, b0 in local:
            bounds = [a0, *[c for c in cuts if a0 < c < b0], b0]
            for x, y in zip(bounds[:-1], bounds[1:], strict=True):
                start = _run_start_ns(t0, lo + x, segments, rate)
                piece = _trim(Piece(channel, start, rate, data[x:y]), start_ns, end_ns)
                if piece is not None:
                    out.append(piece)
        return out

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
    ) -> int:
        """Write one channel-day as a region write; the ledger entry is written last.

        Returns the completion time written to the ledger (ns).

        ``data``/``mask`` hold grid samples ``offset .. offset + len``. The ledger is cleared
        first, so a run killed mid-write leaves the day marked undone and the next run
        rewrites it; rewriting the same input writes the same bytes. With ``fresh`` (the day
        was never written) only the chunks holding samples are touched; otherwise the whole
        day is rewritten so no stale chunk survives.
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
        d = layout.day_index(day_ns)
        cs = self.chunk_samples
        n_recorded = int(np.count_nonzero(mask))
        if fresh and n_recorded == 0:
            lo = hi = 0
        elif fresh:
            lo, hi = offset // cs * cs, min(spd, -(-(offset + data.size) // cs) * cs)
        else:
            lo, hi = 0, spd
        # Unrecorded samples are zero in ``data`` and False in ``mask``: a gap is never a
        # silent zero because readers go through the mask.
        block = np.zeros(hi - lo, dtype=np.int32)
        valid = np.zeros(hi - lo, dtype=bool)
        if hi > lo:
            region = slice(offset - lo, offset - lo + data.size)
            block[region] = data
            if n_recorded < mask.size:
                block[region][~mask] = 0
            valid[region] = mask
        v = self.vars
        values = {
            "starttime": t0_ns,
            "n_samples": n_recorded,
            "flags": int(flags),
            "segments": json.dumps(segments, sort_keys=True),
            "quarantine": json.dumps(quarantine, sort_keys=True),
            "sources": json.dumps(sources, sort_keys=True),
        }

        # Encode here, in the calling thread, as zarr would (SampleRows); zarr's own path
        # for pipelines we do not know.
        direct = self.samples.kind is not None and self.mask_rows.kind is not None
        encoded = (
            [self.samples.encode(d, lo, block), self.mask_rows.encode(d, lo, valid)]
            if direct and hi > lo
            else []
        )
        if direct and all(v[n].raw for n in DAY_VARIABLES):
            # Three steps, each finished before the next: ledger cleared, day written,
            # ledger entry; from the calling thread (write_chunks).
            store = self.samples.store
            write_chunks(
                store,
                [
                    (v["sources"]._key(d), v["sources"].encode(WRITING)),
                    (v["ingested_at"]._key(d), v["ingested_at"].encode(NAT)),
                ],
                fresh,
            )
            day = [(v[n]._key(d), v[n].encode(value)) for n, value in values.items()]
            write_chunks(store, day + [c for part in encoded for c in part], fresh)
            completed = time.time_ns()
            write_chunks(
                store, [(v["ingested_at"]._key(d), v["ingested_at"].encode(completed))], False
            )
            return completed

        async def _write() -> int:
            # Mark the day as in progress: a killed write is redone whole, never "fresh". A
            # fresh day has no ledger entry to clear.
            await asyncio.gather(
                v["sources"].set(d, WRITING), v["ingested_at"].set(d, NAT, fresh=fresh)
            )
            writes = [v[name].set(d, value, fresh=fresh) for name, value in values.items()]
            if encoded:
                writes += [
                    self.samples.put(encoded[0], fresh),
                    self.mask_rows.put(encoded[1], fresh),
                ]
            elif hi > lo:  # a pipeline written through zarr: only now build its arrays
                a = {name: _async(self.arrays[name]) for name in ("data", "mask")}
                writes += [
                    a["data"].setitem((d, slice(lo, hi)), block),
                    a["mask"].setitem((d, slice(lo, hi)), valid),
                ]
            await asyncio.gather(*writes)
            completed = time.time_ns()
            await v["ingested_at"].set(d, completed)
            return completed

        return int(sync(_write()))


_ARRAY_META: dict[tuple[tuple[Any, ...], str], ArrayV3Metadata] = {}


def open_channel_year(root: zarr.Group, path: str) -> ChannelYear | None:
    """Open the channel-year at ``path`` (``None`` if there is none) with one store read.

    A channel-year of schema 2 or later was created from the schema's documents for its
    layout's shape, which its attributes give, so its arrays are opened from those
    documents, read once per shape and process (one more read); an older one is opened
    through zarr.
    """
    store = root.store
    full = f"{root.path.strip('/')}/{path}".strip("/")
    (raw,) = read_chunks(store, [f"{full}/zarr.json"])
    if raw is None:
        return None
    doc = json.loads(raw)
    if doc.get("node_type") != "group":
        return None
    attrs = doc.get("attributes", {})
    layout = layout_from_attrs(attrs)
    if layout is None:
        group = root[path]
        assert isinstance(group, zarr.Group)
        data = group["data"]
        assert isinstance(data, zarr.Array)
        layout = ContinuousLayout(
            ChannelId(attrs["network"], attrs["station"], attrs["location"], attrs["channel"]),
            int(attrs["year"]),
            float(attrs["sampling_rate"]),
            int(data.chunks[1]),
            str(attrs.get("codec", "pcodec")),
        )
        return ChannelYear(group, layout)
    names = ("data", "mask", *DAY_VARIABLES)
    shape = layout_shape(layout)
    missing = [name for name in names if (shape, name) not in _ARRAY_META]
    if missing and len(_ARRAY_META) > 4096:  # bounded, like the other per-process caches
        _ARRAY_META.clear()
        missing = list(names)
    if missing:  # the first channel-year of its shape here: its documents are the shape's
        stored = read_chunks(store, [f"{full}/{name}/zarr.json" for name in missing])
        docs = None if any(raw is None for raw in stored) else stored
        if docs is None:  # not written by this schema's creator (it writes the group last)
            template = template_documents(layout)
            docs = [template[f"{name}/zarr.json"] for name in missing]
        for name, raw_doc in zip(missing, docs, strict=True):
            assert raw_doc is not None
            _ARRAY_META[(shape, name)] = ArrayV3Metadata.from_dict(json.loads(raw_doc))
    arrays: dict[str, ArrayRef] = {
        name: LazyArray(_ARRAY_META[(shape, name)], StorePath(store, f"{full}/{name}"))
        for name in names
    }
    return ChannelYear(None, layout, arrays)


@dataclass
class Piece:
    """A contiguous run of recorded samples with its exact start time."""

    channel: ChannelId
    start_ns: int
    sampling_rate: float
    data: np.ndarray


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` index pairs of the True runs of ``mask``."""
    edges = np.diff(
        np.concatenate((np.zeros(1, np.int8), mask.view(np.int8), np.zeros(1, np.int8)))
    )
    starts = np.flatnonzero(edges == 1)
    stops = np.flatnonzero(edges == -1)
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def _run_start_ns(t0: int, run_start: int, segments: list[dict[str, Any]], rate: float) -> int:
    """Exact time of grid sample ``run_start``: from the source segment that holds it."""
    period = 1 / rate_fraction(rate) * 1_000_000_000
    for seg in sorted(segments, key=lambda s: int(s["index"])):
        index, npts = int(seg["index"]), int(seg["npts"])
        if index <= run_start < index + npts:
            return int(seg["start_ns"]) + round((run_start - index) * period)
    return t0 + round(run_start * period)


def _segment_runs(
    segments: list[dict[str, Any]], samples_per_day: int, n_samples: int
) -> list[tuple[int, int]] | None:
    """``[start, stop)`` grid runs recorded by ``segments``; ``None`` unless they account for
    exactly ``n_samples`` (then the mask, which holds the same, must be read instead)."""
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
    return runs if sum(b - a for a, b in runs) == n_samples else None


class ContinuousReader:
    """Reads recorded samples back, caching open channel-years across calls."""

    def __init__(self, root: zarr.Group) -> None:
        self.root = root
        self._years: dict[str, ChannelYear | None] = {}

    def _year(self, channel: ChannelId, year: int) -> ChannelYear | None:
        path = f"{CONTINUOUS}/{channel.nslc}/{year:04d}"
        if path not in self._years:
            self._years[path] = open_channel_year(self.root, path)
        return self._years[path]

    def pieces(self, channel: ChannelId, start_ns: int, end_ns: int) -> list[Piece]:
        """Recorded samples of ``channel`` with times in ``[start_ns, end_ns]``, as pieces.

        Pieces split at gaps, at day boundaries where the grid phase changes, and where a
        source segment started off the grid; start times are the source's exact times.
        """
        pieces: list[Piece] = []
        # A day's grid holds only samples of that day, so no earlier day is read.
        day = (start_ns // NS_PER_DAY) * NS_PER_DAY
        while day <= end_ns:
            year = int(str(np.datetime64(day, "ns").astype("datetime64[Y]")))
            handle = self._year(channel, year)
            if handle is not None:
                pieces.extend(handle.pieces(day, start_ns, end_ns))
            day += NS_PER_DAY
        return _merge_adjacent(pieces)


def read_pieces(root: zarr.Group, channel: ChannelId, start_ns: int, end_ns: int) -> list[Piece]:
    """One-off :meth:`ContinuousReader.pieces`."""
    return ContinuousReader(root).pieces(channel, start_ns, end_ns)


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
