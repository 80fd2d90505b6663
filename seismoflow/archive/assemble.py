"""Placing a channel-day's segments on one sample grid, with every defect reported.

Plain numerics: no Prefect, no store. The grid of a day starts at ``t0 = midnight + phase``
where ``phase`` is the sub-sample offset of the day's first segment, so the samples of that
segment land on whole indices. Later segments are placed at their nearest index; a start
that is off the grid keeps its exact time (and the residual) in the segment list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from seismoflow.archive.sources import Problem, Segment
from seismoflow.ids import ChannelId
from seismoflow.storage.schema import Flag
from seismoflow.times import NS_PER_DAY, NS_PER_S, rate_fraction, sample_index, samples_per_day

# A start more than this far off the grid is flagged (residual kept either way).
TIMING_TOLERANCE_NS = 1_000


@dataclass
class ChannelDay:
    """One channel-day ready to be written: grid data, mask, and what was found."""

    channel: ChannelId
    day_ns: int
    sampling_rate: float
    t0_ns: int
    offset: int  # grid index of data[0]; data and mask span only the recorded extent
    data: np.ndarray
    mask: np.ndarray
    segments: list[dict[str, object]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    flags: int = 0

    @property
    def n_samples(self) -> int:
        return int(np.count_nonzero(self.mask))


def _trim_to_day(seg: Segment, day_ns: int) -> Segment | None:
    """The part of ``seg`` whose sample times fall in ``[day_ns, day_ns + 1 day)``."""
    rate = rate_fraction(seg.sampling_rate)
    period = Fraction(NS_PER_S) / rate
    first = 0
    if seg.start_ns < day_ns:
        first = int(-(-Fraction(day_ns - seg.start_ns) // period))  # ceil
    end_excl = int(-(-Fraction(day_ns + NS_PER_DAY - seg.start_ns) // period))
    last = min(seg.npts, end_excl)
    if first >= last:
        return None
    start = seg.start_ns + round(first * period)
    return Segment(seg.channel, start, seg.sampling_rate, seg.data[first:last], seg.source)


def _grid_start(first_start_ns: int, day_ns: int, sampling_rate: float) -> int:
    period = Fraction(NS_PER_S) / rate_fraction(sampling_rate)
    offset = Fraction(first_start_ns - day_ns)
    phase = offset - (offset // period) * period
    return day_ns + round(phase)


def is_flat(values: np.ndarray) -> bool:
    return values.size > 1 and bool((values == values[0]).all())


def _plateaus(at: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate(([0], at.view(np.int8), [0])))
    return list(
        zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True)
    )


# Below this peak-to-peak range (counts) plateaus say nothing about clipping: a 12-bit
# digitizer already spans 4096 counts, while near-dead channels toggle by a few counts.
MIN_CLIP_RANGE = 64


def is_clipped(values: np.ndarray, fraction: float) -> bool:
    """Plateaus at the max or min value hold a share ``fraction`` (and >= 3) of the samples.

    A plateau counts when it lasts >= 3 samples and is entered steeply (a step of at least
    half the RMS sample-to-sample step): a smooth natural peak flattens gently into its top
    integer value, a clipped trace runs into the digitizer's limit.
    """
    if values.size < 3:
        return False
    top, bottom = values.max(), values.min()
    if int(top) - int(bottom) < MIN_CLIP_RANGE:
        return False  # flat, or a near-dead channel toggling between a few counts
    need = max(3, int(np.ceil(fraction * values.size)))
    # Plateaus hold at most every sample at the extreme: most traces touch their extremes a
    # few times, so the costlier plateau search runs only where it could reach ``need``.
    candidates = [e for e in (top, bottom) if np.count_nonzero(values == e) >= need]
    if not candidates:
        return False
    steps = np.diff(values.astype(np.int64))
    steep = 0.5 * float(np.sqrt(np.mean(steps.astype(np.float64) ** 2)))
    for extreme in candidates:
        held = sum(
            b - a
            for a, b in _plateaus(values == extreme)
            if b - a >= 3 and a > 0 and abs(int(values[a]) - int(values[a - 1])) >= steep
        )
        if held >= need:
            return True
    return False


def assemble_day(
    channel: ChannelId,
    day_ns: int,
    segments: list[Segment],
    sampling_rate: float,
    clip_fraction: float = 1e-3,
) -> ChannelDay:
    """Place ``segments`` of one channel on the day's grid at ``sampling_rate``.

    Segments at another rate are quarantined (``MIXED_RATES``). Overlaps that agree are
    merged (``OVERLAP_IDENTICAL``); disagreeing samples of the later segment are
    quarantined (``OVERLAP_CONFLICT``). Gaps stay ``False`` in the mask (``GAPS``).
    """
    spd = samples_per_day(sampling_rate)
    flags = 0
    problems: list[Problem] = []
    usable: list[Segment] = []
    for seg in segments:
        if seg.channel != channel:
            problems.append(
                Problem(
                    seg.source,
                    f"file holds {seg.channel} data where {channel} was expected "
                    "(SDS name and record header disagree); trace not ingested",
                    channel.nslc,
                    seg.start_ns,
                    None,
                    seg.npts,
                )
            )
            continue
        if seg.sampling_rate != sampling_rate:
            flags |= Flag.MIXED_RATES
            problems.append(
                Problem(
                    seg.source,
                    f"segment at {seg.sampling_rate} Hz on a channel stored at "
                    f"{sampling_rate} Hz (mixed sampling rates); segment not ingested",
                    channel.nslc,
                    seg.start_ns,
                    None,
                    seg.npts,
                )
            )
            continue
        trimmed = _trim_to_day(seg, day_ns)
        if trimmed is not None:
            usable.append(trimmed)
    usable.sort(key=lambda s: (s.start_ns, s.source))
    t0 = _grid_start(usable[0].start_ns, day_ns, sampling_rate) if usable else day_ns
    placements = [(seg, *sample_index(seg.start_ns, t0, sampling_rate)) for seg in usable]
    # Arrays span only the recorded extent: a 150 s window does not allocate a whole day.
    first = max(0, min((i for _, i, _ in placements), default=0))
    stop = min(spd, max((i + s.npts for s, i, _ in placements), default=0))
    data = np.zeros(max(0, stop - first), dtype=np.int32)
    mask = np.zeros(max(0, stop - first), dtype=bool)
    placed: list[dict[str, object]] = []
    for seg, index, residual in placements:
        if abs(residual) > TIMING_TOLERANCE_NS:
            flags |= Flag.TIMING_SHIFT
        lo, hi = max(index, 0) - first, min(index + seg.npts, spd) - first
        if hi <= lo:
            continue
        values = seg.data[lo + first - index : hi + first - index]
        taken = mask[lo:hi]
        overlapped = bool(taken.any())
        if overlapped:
            same = data[lo:hi][taken] == values[taken]
            if same.all():
                flags |= Flag.OVERLAP_IDENTICAL
            else:
                flags |= Flag.OVERLAP_CONFLICT
                problems.append(
                    Problem(
                        seg.source,
                        f"overlap with differing samples: {int((~same).sum())} of "
                        f"{int(taken.sum())} overlapping samples disagree with the earlier "
                        "segment; the earlier samples were kept, these not ingested",
                        channel.nslc,
                        seg.start_ns,
                        None,
                        int((~same).sum()),
                    )
                )
        if overlapped:
            fresh = ~taken
            data[lo:hi][fresh] = values[fresh]
        else:
            data[lo:hi] = values
        mask[lo:hi] = True
        placed.append(
            {
                "start_ns": seg.start_ns,
                "index": index,
                "npts": seg.npts,
                "residual_ns": residual,
                "source": seg.source,
            }
        )
    # The arrays span first..last recorded sample, so a mask with no False has no gap
    # (the common single-segment day: no copy of its samples).
    recorded = data if mask.all() else data[mask]
    if recorded.size:
        if recorded.size < mask.size:
            lo_rec, hi_rec = np.flatnonzero(mask)[[0, -1]]
            if not mask[lo_rec : hi_rec + 1].all():
                flags |= Flag.GAPS
        if is_flat(recorded):
            flags |= Flag.FLAT
        elif is_clipped(recorded, clip_fraction):
            flags |= Flag.CLIPPED
    return ChannelDay(
        channel, day_ns, sampling_rate, t0, first, data, mask, placed, problems, flags
    )
