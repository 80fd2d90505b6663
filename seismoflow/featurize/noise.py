"""Noise examples: windows of stored data with no catalogued event nearby, screened.

Windows are drawn from every recorded stretch of the store long enough to hold one (day-long
continuous records, and any event recording with a quiet stretch before the event), cut with
the same layout, rate and processing as event windows (``cut_window`` of
``seismoflow.archive.windows``), so the window's extent never tells noise from events.

A candidate is dropped when a catalogued origin lies within ``margin_s`` of it, when it
overlaps a listed label window (e.g. RockNet's rockfall, car and earthquake lists), when any
present component lacks data, or when the STA/LTA screen finds a transient in it
(continuous records are not clean noise: O2.WILZ holds earthquakes). Plain functions; the
``extract-features`` flow wires them.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from seismoflow.archive.metadata import MetadataIndex, StationInfo
from seismoflow.archive.windows import COMPONENT_OF, READ_MARGIN_S, WindowSpec, cut_window
from seismoflow.featurize.physics import band_limit
from seismoflow.ids import ChannelId
from seismoflow.labels import NOISE
from seismoflow.storage.continuous import ContinuousReader
from seismoflow.storage.events import TraceWriter, trace_keys
from seismoflow.storage.location import open_root, store_lock
from seismoflow.storage.schema import (
    COMPONENTS,
    NOISE_GROUP,
    EventWindowLayout,
    Flag,
    append_traces,
    create_events,
)
from seismoflow.storage.tables import read_table
from seismoflow.times import NAT, NS_PER_S

SCREEN_STA_S = 2.0  # seconds of the short-term average of the screen


@dataclass(frozen=True)
class LabelWindow:
    """A listed time window holding a non-noise signal, at ``station`` (kept for reports)."""

    station: str
    start_ns: int
    end_ns: int
    source: str


@dataclass(frozen=True)
class NoisePlan:
    """Candidates per channel set (in the order they are tried) and why others were dropped."""

    candidates: dict[str, list[WindowSpec]]
    dropped: dict[str, int]


def read_label_windows(paths: Sequence[str | Path]) -> list[LabelWindow]:
    """Label windows from CSV lists with ``trace_starttime``/``trace_endtime`` (or
    ``starttime``/``endtime``) and optionally ``station`` columns, comma or blank separated
    (RockNet's ``{rockfall,eq,car}_meta.csv``)."""
    out: list[LabelWindow] = []
    for path in paths:
        df = pd.read_csv(path, sep=r"[,\s]+", engine="python", dtype=str)
        cols = {c.lower(): c for c in df.columns}
        start = cols.get("trace_starttime") or cols.get("starttime")
        end = cols.get("trace_endtime") or cols.get("endtime")
        if start is None or end is None:
            raise ValueError(
                f"label list {path} has no starttime/endtime (or trace_starttime/"
                f"trace_endtime) column; columns are {list(df.columns)}"
            )
        sta = cols.get("station")
        t0 = pd.to_datetime(df[start], utc=True).dt.as_unit("ns").astype("int64")
        t1 = pd.to_datetime(df[end], utc=True).dt.as_unit("ns").astype("int64")
        stations = df[sta].fillna("") if sta else pd.Series([""] * len(df))
        name = Path(path).name
        out += [
            LabelWindow(str(s), int(a), int(b), name)
            for s, a, b in zip(stations, t0, t1, strict=True)
        ]
    return out


def _intervals(root: zarr.Group, channel: str, day_rows: pd.DataFrame) -> list[tuple[int, int]]:
    """Recorded stretches (first, last sample time ns) of a channel, from the segments its
    ledger rows (``tables/channel_days``) list."""
    out: list[tuple[int, int]] = []
    for row in day_rows.itertuples(index=False):
        text = str(getattr(row, "segments", "") or "")
        period = NS_PER_S / float(row.sampling_rate)
        for seg in json.loads(text) if text and text != "writing" else []:
            start = int(seg["start_ns"])
            out.append((start, start + round((int(seg["npts"]) - 1) * period)))
    out.sort()
    merged: list[tuple[int, int]] = []
    for a, b in out:
        if merged and a <= merged[-1][1] + 2 * NS_PER_S // 100:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def plan_noise(
    location: str,
    catalog: pd.DataFrame,
    channel_days: pd.DataFrame,
    layout: EventWindowLayout,
    margin_s: float,
    label_windows: Sequence[LabelWindow] = (),
    seed: int = 0,
    metadata: MetadataIndex | None = None,
) -> NoisePlan:
    """Candidate noise windows per channel set (``NET.STA.LOC.BI?``), in a seeded order.

    Candidates tile each recorded stretch of the channel set's vertical channel (else its
    first present component) with windows of the layout's length, leaving the read margin
    of event windows on both sides. Those near a catalogued origin or a listed label
    window are dropped here and counted.
    """
    root = open_root(location, mode="r")
    length = round(layout.n_samples * NS_PER_S / layout.sampling_rate)
    margin = round(READ_MARGIN_S * NS_PER_S)
    near = round(margin_s * NS_PER_S)
    pre = round(layout.pre_s * NS_PER_S)
    origins = (
        np.sort(catalog["origin_time_ns"].to_numpy(dtype=np.int64))
        if len(catalog)
        else (np.zeros(0, dtype=np.int64))
    )
    days = channel_days[channel_days["n_samples"].astype(np.int64) > 0]
    # Only channel-days long enough to hold a window (with margins) can give candidates.
    span = days["last_ns"].astype(np.int64) - days["first_ns"].astype(np.int64)
    days = days[span >= length + 2 * margin]
    # ... and only those with a stretch that is far enough from every catalogued origin.
    days = days[
        [
            _has_quiet_stretch(int(a), int(b), origins, near, length + 2 * margin)
            for a, b in zip(days["first_ns"], days["last_ns"], strict=True)
        ]
    ]
    sets: dict[tuple[str, str, str, str], dict[str, tuple[str, float]]] = defaultdict(dict)
    for row in days.itertuples(index=False):
        ch = ChannelId.parse(str(row.channel))
        comp = COMPONENT_OF.get(ch.component)
        if comp is not None:
            sets[(ch.network, ch.station, ch.location, ch.channel_set)].setdefault(
                comp, (ch.channel, float(row.sampling_rate))
            )
    listed = _Listed(label_windows)
    dropped: Counter[str] = Counter()
    candidates: dict[str, list[WindowSpec]] = {}
    rng = np.random.default_rng(seed)
    for key in sorted(sets):
        net, sta, loc, chset = key
        comps = sets[key]
        lead = next(c for c in COMPONENTS if c in comps)
        nslc = f"{net}.{sta}.{loc}.{comps[lead][0]}"
        stretches = _intervals(root, nslc, days[days["channel"] == nslc])
        specs: list[WindowSpec] = []
        for first, last in stretches:
            start = first + margin
            while start + length + margin <= last:
                end = start + length
                lo, hi = np.searchsorted(origins, [start - near, end + near])
                if hi > lo:
                    dropped["near_catalogued_event"] += 1
                elif listed.overlaps(start, end):
                    dropped["listed_label_window"] += 1
                else:
                    info = metadata.station(net, sta, start) if metadata else None
                    specs.append(_spec(net, sta, loc, chset, comps, start, pre, info))
                start += length // 2  # half-overlapping tiles
        if specs:
            order = rng.permutation(len(specs))
            candidates[f"{net}.{sta}.{loc}.{chset}"] = [specs[i] for i in order]
    return NoisePlan(candidates, dict(dropped))


class _Listed:
    """Listed label windows, sorted for overlap queries. A window applies to every station:
    the lists describe one small array, whose stations all record what one of them does."""

    def __init__(self, windows: Sequence[LabelWindow]) -> None:
        ordered = sorted((w.start_ns, w.end_ns) for w in windows)
        self.starts = np.array([a for a, _ in ordered], dtype=np.int64)
        self.max_end = np.maximum.accumulate(np.array([b for _, b in ordered], dtype=np.int64))

    def overlaps(self, start: int, end: int) -> bool:
        i = int(np.searchsorted(self.starts, end, side="right"))
        return i > 0 and int(self.max_end[i - 1]) >= start


def _has_quiet_stretch(first: int, last: int, origins: np.ndarray, near: int, needed: int) -> bool:
    """Whether ``[first, last]`` holds ``needed`` ns at least ``near`` from every origin."""
    lo, hi = np.searchsorted(origins, [first - near, last + near])
    edge = first
    for o in origins[lo:hi]:
        if o - near - edge >= needed:
            return True
        edge = max(edge, int(o) + near)
    return last - edge >= needed


def _spec(
    net: str,
    sta: str,
    loc: str,
    chset: str,
    comps: dict[str, tuple[str, float]],
    start: int,
    pre: int,
    info: StationInfo | None = None,
) -> WindowSpec:
    codes = [comps.get(c, ("", np.nan))[0] for c in COMPONENTS]
    stamp = str(np.datetime64(start, "ns").astype("datetime64[ms]"))
    rates = [r for _, r in comps.values()]
    return WindowSpec(
        trace_key=f"noise|{net}.{sta}.{loc}.{chset}|{stamp}",
        event_id="",
        network=net,
        station=sta,
        location=loc,
        channel_set=chset,
        channels=",".join(codes),
        station_latitude=info.latitude if info else np.nan,
        station_longitude=info.longitude if info else np.nan,
        station_elevation=info.elevation_m if info else np.nan,
        distance_deg=np.nan,
        origin_time=NAT,
        reference_time=start + pre,
        window_start=start,
        event_type="",
        magnitude=np.nan,
        source_sampling_rate=float(max(rates)),
        flags=int(
            (0 if all(codes) else Flag.MISSING_COMPONENTS) | (0 if info else Flag.NO_COORDINATES)
        ),
    )


def screen_statistic(block: np.ndarray, rate: float) -> float:
    """Largest ratio, over present components, of the peak to the median short-term
    (``SCREEN_STA_S``) energy average in 0.5-8 Hz: ~2-3 for stationary noise, far more
    when an earthquake, rockfall or passing car is in the window."""
    present = np.isfinite(block).any(axis=1)
    if not present.any():
        return float("inf")
    y, _, _ = band_limit(block[present], rate)
    e = np.square(y)
    n = max(1, round(SCREEN_STA_S * 20.0))
    kernel = np.ones(n) / n
    sta = np.stack([np.convolve(row, kernel, mode="valid") for row in e])
    med = np.median(sta, axis=1)
    ratio = np.where(med > 0, sta.max(axis=1) / np.where(med > 0, med, 1.0), np.inf)
    return float(ratio.max())


def screen_window(block: np.ndarray, rate: float, max_ratio: float) -> str | None:
    """Why a cut candidate is not clean noise, or ``None`` if it is."""
    present = np.isfinite(block).any(axis=1)
    if not present.any():
        return "no_data"
    if np.isnan(block[present]).any():
        return "partial_window"
    if (np.nanstd(block[present], axis=1) == 0).any():
        return "flat"
    if screen_statistic(block, rate) > max_ratio:
        return "transient_sta_lta"
    return None


def _noise_row(spec: WindowSpec) -> dict[str, object]:
    return {**spec.as_row(), "label": NOISE, "source": "recorded stretch"}


def cut_noise(
    location: str,
    channel_sets: Sequence[str],
    plan: NoisePlan,
    layout: EventWindowLayout,
    per_channel_set: int,
    max_ratio: float,
) -> dict[str, int]:
    """Cut, screen and write up to ``per_channel_set`` noise windows per channel set.

    Candidates are tried in the plan's order; windows already in ``noise/`` count and are
    not cut again, so a re-run writes nothing new. Returns counts.
    """
    root = open_root(location)
    reader = ContinuousReader(root)

    def read(ch: ChannelId, t0: int, t1: int) -> list[tuple[int, float, np.ndarray]]:
        return [(p.start_ns, p.sampling_rate, p.data) for p in reader.pieces(ch, t0, t1)]

    counts: Counter[str] = Counter()
    with store_lock(location):
        known = set(trace_keys(create_events(root, layout, NOISE_GROUP)))
    accepted: list[tuple[WindowSpec, np.ndarray, int]] = []
    for name in channel_sets:
        have = 0
        for spec in plan.candidates.get(name, []):
            if have >= per_channel_set:
                break
            if spec.trace_key in known:
                have += 1
                counts["already_stored"] += 1
                continue
            block, flags = cut_window(spec, layout, read)
            reason = screen_window(block, layout.sampling_rate, max_ratio)
            if reason is not None:
                counts[f"rejected_{reason}"] += 1
                continue
            accepted.append((spec, block, flags))
            have += 1
    if accepted:
        with store_lock(location):
            group = create_events(root, layout, NOISE_GROUP)
            existing = trace_keys(group)
            new = [a for a in accepted if a[0].trace_key not in existing]
            indices = append_traces(group, [_noise_row(s) for s, _, _ in new]) if new else []
        writer = TraceWriter(group)
        try:
            for index, (_, block, flags) in zip(indices, new, strict=True):
                writer.write(index, block, flags)
        finally:
            writer.flush(location)
        counts["written"] += len(new)
    return dict(counts)


def plan_store_noise(
    location: str,
    layout: EventWindowLayout,
    margin_s: float,
    label_lists: Sequence[str | Path] = (),
    seed: int = 0,
) -> NoisePlan:
    """:func:`plan_noise` over a store's own tables (catalogue, channel-days, channels)."""
    catalog = read_table(location, "catalog")
    days = read_table(location, "channel_days")
    if days.empty:
        return NoisePlan({}, {})
    for col in ("first_ns", "last_ns", "n_samples", "day_ns"):
        days[col] = days[col].astype(np.int64)
    if len(catalog):
        catalog["origin_time_ns"] = catalog["origin_time_ns"].astype(np.int64)
    channels = read_table(location, "channels")
    metadata = MetadataIndex(channels) if len(channels) else None
    return plan_noise(
        location, catalog, days, layout, margin_s, read_label_windows(label_lists), seed, metadata
    )
