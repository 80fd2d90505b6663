"""Region writes and reads of continuous channel-day data (layout in :mod:`storage.schema`)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from zarr.core.sync import sync

from seismoflow.ids import ChannelId
from seismoflow.times import NAT, NS_PER_DAY, NS_PER_S, rate_fraction
from storage.schema import CONTINUOUS, ContinuousLayout, SchemaError


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


class ChannelYear:
    """Handles to one channel-year's arrays, opened once and reused for its days."""

    def __init__(self, group: zarr.Group, layout: ContinuousLayout) -> None:
        self.group = group
        self.layout = layout
        self.arrays: dict[str, zarr.Array] = {
            name: arr for name, arr in group.arrays() if isinstance(arr, zarr.Array)
        }

    def ledger(self, day_ns: int) -> tuple[int, str]:
        """``(ingested_at, sources)`` of a day.

        ``sources`` is ``''`` if the day was never written, ``'writing'`` while (or if a
        killed run left it) being written, else the JSON list of its source files.
        """
        d = self.layout.day_index(day_ns)

        async def _get() -> list[Any]:
            return list(
                await asyncio.gather(
                    self.arrays["ingested_at"].async_array.getitem(d),
                    self.arrays["sources"].async_array.getitem(d),
                )
            )

        done, sources = (np.asarray(v).item() for v in sync(_get()))
        return int(done), str(sources)

    def is_done(self, day_ns: int, sources: list[dict[str, Any]]) -> bool:
        """True when the ledger marks this day complete and built from all of ``sources``."""
        return built_from(*self.ledger(day_ns), sources)

    def record(self, day_ns: int) -> DayRecord:
        """The per-day variables of one stored channel-day."""
        d = self.layout.day_index(day_ns)
        names = (
            "segments",
            "quarantine",
            "starttime",
            "n_samples",
            "flags",
            "ingested_at",
            "sources",
        )
        arrays = [self.arrays[n].async_array for n in names]

        async def _get() -> list[Any]:
            return list(await asyncio.gather(*(a.getitem(d) for a in arrays)))

        values = {n: np.asarray(v).item() for n, v in zip(names, sync(_get()), strict=True)}
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
            pieces = _day_pieces(
                self.group,
                self.arrays,
                self.layout.channel,
                rec.day_ns,
                self.layout.year,
                start,
                end,
            )
            out += [(str(seg["source"]), p) for p in pieces]
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
        spd = layout.samples_per_day
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
        cs = layout.chunk_samples
        n_recorded = int(mask.sum())
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
            block[offset - lo : offset - lo + data.size] = np.where(mask, data, 0)
            valid[offset - lo : offset - lo + mask.size] = mask
        a = {name: arr.async_array for name, arr in self.arrays.items()}

        async def _write() -> int:
            # Mark the day as in progress: a killed write is redone whole, never "fresh".
            await asyncio.gather(a["ingested_at"].setitem(d, NAT), a["sources"].setitem(d, WRITING))
            await asyncio.gather(
                a["data"].setitem((d, slice(lo, hi)), block),
                a["mask"].setitem((d, slice(lo, hi)), valid),
                a["starttime"].setitem(d, t0_ns),
                a["n_samples"].setitem(d, n_recorded),
                a["flags"].setitem(d, int(flags)),
                a["segments"].setitem(d, json.dumps(segments, sort_keys=True)),
                a["quarantine"].setitem(d, json.dumps(quarantine, sort_keys=True)),
                a["sources"].setitem(d, json.dumps(sources, sort_keys=True)),
            )
            completed = time.time_ns()
            await a["ingested_at"].setitem(d, completed)
            return completed

        return int(sync(_write()))


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


class ContinuousReader:
    """Reads recorded samples back, caching open channel-years across calls."""

    def __init__(self, root: zarr.Group) -> None:
        self.root = root
        self._channels: dict[str, set[str] | None] = {}
        self._years: dict[str, tuple[zarr.Group, dict[str, zarr.Array]]] = {}

    def _years_of(self, channel: ChannelId) -> set[str]:
        if channel.nslc not in self._channels:
            base = f"{CONTINUOUS}/{channel.nslc}"
            node = self.root.get(base)
            self._channels[channel.nslc] = (
                set(node.group_keys()) if isinstance(node, zarr.Group) else None
            )
        return self._channels[channel.nslc] or set()

    def _year(
        self, channel: ChannelId, year: int
    ) -> tuple[zarr.Group, dict[str, zarr.Array]] | None:
        if f"{year:04d}" not in self._years_of(channel):
            return None
        path = f"{CONTINUOUS}/{channel.nslc}/{year:04d}"
        if path not in self._years:
            group = self.root[path]
            assert isinstance(group, zarr.Group)
            arrays = {n: a for n, a in group.arrays() if isinstance(a, zarr.Array)}
            self._years[path] = (group, arrays)
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
            handles = self._year(channel, year)
            if handles is not None:
                pieces.extend(_day_pieces(*handles, channel, day, year, start_ns, end_ns))
            day += NS_PER_DAY
        return _merge_adjacent(pieces)


def read_pieces(root: zarr.Group, channel: ChannelId, start_ns: int, end_ns: int) -> list[Piece]:
    """One-off :meth:`ContinuousReader.pieces`."""
    return ContinuousReader(root).pieces(channel, start_ns, end_ns)


def _day_pieces(
    group: zarr.Group,
    arrays: dict[str, zarr.Array],
    channel: ChannelId,
    day: int,
    year: int,
    start_ns: int,
    end_ns: int,
) -> list[Piece]:
    d = (day - int(np.datetime64(f"{year:04d}-01-01", "ns").astype(np.int64))) // NS_PER_DAY
    a = {
        name: arrays[name].async_array
        for name in ("ingested_at", "n_samples", "starttime", "segments")
    }

    async def _meta() -> list[Any]:
        return list(await asyncio.gather(*(arr.getitem(d) for arr in a.values())))

    done, n_samples, t0_raw, segments_raw = (np.asarray(v).item() for v in sync(_meta()))
    if int(done) == NAT or int(n_samples) == 0:
        return []
    attrs: dict[str, Any] = dict(group.attrs)
    rate = float(attrs["sampling_rate"])
    t0 = int(t0_raw)
    fr = rate_fraction(rate)
    # One sample of slack each side: a segment that started off the grid has exact times
    # up to half a sample from its grid times; pieces are trimmed on exact times below.
    lo = max(0, int(-(-(start_ns - t0) * fr // 1_000_000_000)) - 1)
    hi = min(int(attrs["samples_per_day"]), int((end_ns - t0) * fr // 1_000_000_000) + 2)
    if lo >= hi:
        return []

    async def _samples() -> list[Any]:
        return list(
            await asyncio.gather(
                arrays["mask"].async_array.getitem((d, slice(lo, hi))),
                arrays["data"].async_array.getitem((d, slice(lo, hi))),
            )
        )

    mask, data = (np.asarray(x) for x in sync(_samples()))
    if not mask.any():
        return []
    segments = json.loads(str(segments_raw))
    # Split runs at every segment start so off-grid starts keep their exact times.
    cuts = sorted({int(s["index"]) - lo for s in segments if lo < int(s["index"]) < hi})
    out: list[Piece] = []
    for a0, b0 in _runs(mask):
        bounds = [a0, *[c for c in cuts if a0 < c < b0], b0]
        for x, y in zip(bounds[:-1], bounds[1:], strict=True):
            start = _run_start_ns(t0, lo + x, segments, rate)
            piece = _trim(Piece(channel, start, rate, data[x:y]), start_ns, end_ns)
            if piece is not None:
                out.append(piece)
    return out


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
    return Piece(piece.channel, start, piece.sampling_rate, piece.data[first : last + 1].copy())


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
