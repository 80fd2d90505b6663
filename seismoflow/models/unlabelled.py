"""Unlabelled vertical windows of the store's continuous data, for self-supervised pretraining.

Labelled events are few (212 in the shared archive) and continuous data is not: the store's
``continuous/`` arrays hold day-long records of many stations. Windows are drawn at random
times from the recorded stretches of vertical channels, kept only where no catalogued origin
lies within ``margin_s`` of the window and where the window overlaps no labelled window of
the same station (the store's ``events/`` and ``noise/`` windows), so no labelled example, of
any cross-validation fold, is ever among them. They are cut exactly like event windows (the
layout's length and rate, the same anti-alias filter and Lanczos interpolation from the
stored pieces, ``resample_pieces``) and preprocessed by the CNN's own
:func:`~seismoflow.models.windows.preprocess_block`, so the network sees the same kind of
input as in training. Windows with gaps or a flat vertical are dropped.

Unlike ``noise/`` windows they are not screened for transients: uncatalogued earthquakes,
rockfalls and cars are welcome here, the pretraining has no labels to get wrong.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import zarr

from seismoflow.archive.windows import READ_MARGIN_S
from seismoflow.ids import ChannelId
from seismoflow.models.windows import Preprocess, open_group, preprocess_block
from seismoflow.signal import resample_pieces
from seismoflow.storage.continuous import ContinuousReader
from seismoflow.storage.location import open_root
from seismoflow.storage.schema import EventWindowLayout
from seismoflow.storage.tables import read_table
from seismoflow.times import NS_PER_S

log = logging.getLogger(__name__)

LABELLED_GROUPS = ("events", "noise")
# Windows preprocessed at a time (the CNN's inference block: the work arrays stay in cache).
PREPROCESS_BLOCK = 128


@dataclass(frozen=True)
class UnlabelledWindow:
    """A window of one vertical channel (``NET.STA.LOC.CHA``) from ``start_ns`` (UTC ns)."""

    channel: str
    start_ns: int

    @property
    def station(self) -> str:
        """``NET.STA``: labelled windows are avoided per station."""
        return ".".join(self.channel.split(".")[:2])


def recorded_stretches(segments: str, sampling_rate: float) -> list[tuple[int, int]]:
    """Recorded stretches ``(first, last sample time ns)`` of a channel-day from its ledger
    ``segments`` (JSON), merged where they touch."""
    if not segments or segments == "writing":
        return []
    period = NS_PER_S / float(sampling_rate)
    spans = sorted(
        (int(s["start_ns"]), int(s["start_ns"]) + round((int(s["npts"]) - 1) * period))
        for s in json.loads(segments)
    )
    merged: list[tuple[int, int]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1] + round(2 * period):
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def allowed_starts(
    stretch: tuple[int, int], origins: np.ndarray, length: int, margin: int, read_margin: int
) -> list[tuple[int, int]]:
    """Intervals ``[lo, hi]`` of window starts inside ``stretch`` (leaving ``read_margin`` ns
    of data on both sides) whose window ``[start, start + length]`` lies at least ``margin``
    ns from every origin of ``origins`` (sorted ns)."""
    lo, hi = stretch[0] + read_margin, stretch[1] - read_margin - length
    if hi < lo:
        return []
    out: list[tuple[int, int]] = []
    edge = lo
    first, last = np.searchsorted(origins, [lo - margin, hi + length + margin])
    for o in origins[first:last].tolist():
        blocked_lo, blocked_hi = o - margin - length, o + margin
        if blocked_lo > edge:
            out.append((edge, min(hi, blocked_lo - 1)))
        edge = max(edge, blocked_hi + 1)
        if edge > hi:
            break
    if edge <= hi:
        out.append((edge, hi))
    return [(a, b) for a, b in out if a <= b]


def _overlaps(spans: np.ndarray | None, start: int, end: int) -> bool:
    """Whether ``[start, end]`` overlaps a row ``(start, end)`` of ``spans``."""
    return spans is not None and bool(np.any((spans[:, 0] <= end) & (spans[:, 1] >= start)))


def plan_unlabelled(
    channel_days: pd.DataFrame,
    origins_ns: np.ndarray,
    labelled: Mapping[str, np.ndarray],
    length_ns: int,
    n_windows: int,
    *,
    margin_s: float = 600.0,
    seed: int = 0,
) -> list[UnlabelledWindow]:
    """Up to ``n_windows`` random vertical windows of ``length_ns`` (a plain function of the
    store's tables): a channel-day drawn uniformly among the vertical channel-days that have
    room for one (``tables/channel_days`` rows, ``segments`` JSON), then a start uniform over
    its allowed starts (:func:`allowed_starts`: ``margin_s`` from every catalogued origin);
    a draw overlapping a labelled window of the same station (``labelled``: ``NET.STA`` ->
    ``(k, 2)`` start / end ns) or overlapping an earlier draw of the same channel by more
    than half a window is redrawn (the store holds little data away from events, so windows
    may share half their samples; training crops them anyway)."""
    origins = np.sort(np.asarray(origins_ns, dtype=np.int64))
    margin, read_margin = round(margin_s * NS_PER_S), round(READ_MARGIN_S * NS_PER_S)
    options: list[tuple[str, np.ndarray, np.ndarray]] = []  # channel, interval starts, widths
    for row in channel_days.itertuples(index=False):
        channel = str(row.channel)
        if ChannelId.parse(channel).component != "Z" or int(row.n_samples) <= 0:
            continue
        intervals = [
            iv
            for stretch in recorded_stretches(str(row.segments or ""), float(row.sampling_rate))
            for iv in allowed_starts(stretch, origins, length_ns, margin, read_margin)
        ]
        if intervals:
            lo = np.array([a for a, _ in intervals], dtype=np.int64)
            width = np.array([b - a + 1 for a, b in intervals], dtype=np.float64)
            options.append((channel, lo, width))
    rng = np.random.default_rng(seed)
    chosen: list[UnlabelledWindow] = []
    drawn: dict[str, list[int]] = {}
    for _ in range(20 * n_windows if options else 0):
        if len(chosen) >= n_windows:
            break
        channel, lo, width = options[int(rng.integers(len(options)))]
        i = int(rng.choice(len(lo), p=width / width.sum()))
        start = int(lo[i] + int(rng.random() * width[i]))
        window = UnlabelledWindow(channel, start)
        end = start + length_ns
        taken = drawn.setdefault(channel, [])
        if _overlaps(labelled.get(window.station), start, end) or any(
            abs(start - a) < length_ns // 2 for a in taken
        ):
            continue
        taken.append(start)
        chosen.append(window)
    return chosen


def labelled_spans(location: str) -> dict[str, np.ndarray]:
    """``NET.STA`` -> ``(k, 2)`` start / end (ns) of the store's labelled windows
    (``events/`` and ``noise/``)."""
    out: dict[str, list[np.ndarray]] = {}
    root = open_root(location, mode="r")
    for name in LABELLED_GROUPS:
        if name not in root:
            continue
        group = open_group(location, name)
        if "window_start" not in group:
            continue
        rate = float(group.attrs["sampling_rate"])  # type: ignore[arg-type]
        length = round(int(group.attrs["n_samples"]) * NS_PER_S / rate)  # type: ignore[arg-type]
        arrays = [group[k] for k in ("network", "station", "window_start")]
        assert all(isinstance(a, zarr.Array) for a in arrays)
        net, sta, start = (np.asarray(a[:]) for a in arrays)  # type: ignore[index]
        start = start.astype("datetime64[ns]").astype(np.int64)
        keys = np.array([f"{a}.{b}" for a, b in zip(net.tolist(), sta.tolist(), strict=True)])
        for key in np.unique(keys):
            s = start[keys == key]
            out.setdefault(str(key), []).append(np.stack([s, s + length], axis=1))
    return {k: np.concatenate(v) for k, v in out.items()}


def window_layout(location: str) -> EventWindowLayout:
    """The store's window layout (``events/`` attributes): length and rate of every window."""
    attrs = open_group(location, "events").attrs
    return EventWindowLayout(
        float(attrs["sampling_rate"]),  # type: ignore[arg-type]
        float(attrs["pre_s"]),  # type: ignore[arg-type]
        float(attrs["post_s"]),  # type: ignore[arg-type]
        str(attrs.get("reference", "origin")),
    )


def cut_unlabelled(
    location: str, windows: Sequence[UnlabelledWindow], layout: EventWindowLayout
) -> tuple[np.ndarray, list[UnlabelledWindow]]:
    """The windows' vertical samples ``(n, samples)`` float32 at the layout's rate, cut as
    event windows are; windows with a gap or a flat record are left out (the kept windows
    are returned beside the samples)."""
    reader = ContinuousReader(open_root(location, mode="r"))
    n = layout.n_samples
    margin = round(READ_MARGIN_S * NS_PER_S)
    rows: list[np.ndarray] = []
    kept: list[UnlabelledWindow] = []
    for w in windows:
        end = w.start_ns + round(n * NS_PER_S / layout.sampling_rate)
        pieces = reader.pieces(ChannelId.parse(w.channel), w.start_ns - margin, end + margin)
        trace = resample_pieces(
            [(p.start_ns, p.sampling_rate, p.data) for p in pieces], w.start_ns,
            layout.sampling_rate, n,
        )  # fmt: skip
        if np.isfinite(trace).all() and float(np.std(trace)) > 0:
            rows.append(trace.astype(np.float32))
            kept.append(w)
    return (np.stack(rows) if rows else np.zeros((0, n), dtype=np.float32)), kept


def preprocess_verticals(
    z: np.ndarray, rate: float, prep: Preprocess
) -> tuple[np.ndarray, np.ndarray]:
    """Vertical windows ``(n, samples)`` at ``rate`` Hz to the CNN's input ``(x, mask)``, by
    :func:`~seismoflow.models.windows.preprocess_block` exactly as a stored window with only
    its vertical recorded (other components of ``prep`` are masked out)."""
    if "Z" not in prep.components:
        raise ValueError(f"unlabelled windows are verticals; components {prep.components}")
    xs, masks = [], []
    for start in range(0, max(len(z), 1), PREPROCESS_BLOCK):  # bounded float64 work arrays
        part = z[start : start + PREPROCESS_BLOCK]
        block = np.full((len(part), len(prep.components), z.shape[-1]), np.nan, np.float32)
        block[:, list(prep.components).index("Z")] = part
        xb, mb = preprocess_block(block, rate, prep, prep.components)
        xs.append(xb)
        masks.append(mb)
    return np.concatenate(xs), np.concatenate(masks)


def unlabelled_inputs(
    location: str,
    prep: Preprocess,
    n_windows: int,
    *,
    margin_s: float = 600.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, list[UnlabelledWindow]]:
    """Up to ``n_windows`` unlabelled vertical windows of the store, preprocessed as the CNN's
    input: ``(x, mask, windows)`` (``x`` float32 ``(n, channels, samples)``; only the vertical
    is recorded, other components of ``prep`` are masked out); empty, with a warning, when the
    store has none."""
    layout = window_layout(location)
    catalog = read_table(location, "catalog")
    origins = (
        catalog["origin_time_ns"].to_numpy(dtype=np.int64)
        if len(catalog)
        else np.zeros(0, dtype=np.int64)
    )
    days = read_table(location, "channel_days")
    length = round(layout.n_samples * NS_PER_S / layout.sampling_rate)
    plan = plan_unlabelled(
        days, origins, labelled_spans(location), length, n_windows, margin_s=margin_s, seed=seed
    )
    z, kept = cut_unlabelled(location, plan, layout)
    if not len(z):
        log.warning("%s: no unlabelled vertical window away from labelled ones", location)
        ch = len(prep.channel_components)
        return np.zeros((0, ch, 0), dtype=np.float32), np.zeros((0, ch), dtype=bool), []
    x, mask = preprocess_verticals(z, layout.sampling_rate, prep)
    log.info(
        "unlabelled windows: %d planned, %d kept (gaps or flat left out), from %d channels",
        len(plan), len(kept), len({w.channel for w in kept}),
    )  # fmt: skip
    return x, mask, kept
