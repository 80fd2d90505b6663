"""The learnable windows of a store, and splits that keep sources apart.

``list_examples`` is the one index every model reads: one row per window of ``events/``
(labelled by :func:`seismoflow.labels.event_class` of the event type) and ``noise/``
(label ``noise``). ``site_folds`` and ``event_split`` assign rows to folds or
train/val/test, never putting one event, or one source site, on both sides.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import zarr

from seismoflow.errors import StoreError
from seismoflow.labels import CLASSES, event_class
from seismoflow.storage.events import written_traces
from seismoflow.storage.schema import EVENTS, NOISE_GROUP, Flag
from seismoflow.storage.tables import read_table
from seismoflow.times import NAT, NS_PER_DAY

log = logging.getLogger(__name__)

GROUPS: tuple[str, ...] = (EVENTS, NOISE_GROUP)
SITE_DEG = 0.25
EXAMPLE_COLUMNS: tuple[str, ...] = (
    "group",
    "trace",
    "trace_key",
    "event_id",
    "network",
    "station",
    "location",
    "channel_set",
    "label",
    "flags",
    "flag_names",
    "has_z",
    "has_n",
    "has_e",
    "site",
    "origin_time",
)
_COORDS = (
    "trace_key",
    "event_id",
    "network",
    "station",
    "location",
    "channel_set",
    "channels",
    "station_latitude",
    "station_longitude",
    "origin_time",
    "window_start",
    "event_type",
    "flags",
    "written_at",
)


def site_cell(latitude: float, longitude: float, deg: float = SITE_DEG) -> str:
    """The id of the ``deg``-degree cell holding a point, e.g. ``46.25_-121.75``
    (its south-west corner); ``""`` if the point is unknown."""
    if not (np.isfinite(latitude) and np.isfinite(longitude)):
        return ""
    lat = np.floor(latitude / deg) * deg
    lon = np.floor(longitude / deg) * deg
    return f"{lat:.2f}_{lon:.2f}"


def _open(location: str) -> zarr.Group | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return zarr.open_group(location, mode="r", zarr_format=3, use_consolidated=False)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return None


def _group_frame(group: zarr.Group, name: str) -> pd.DataFrame:
    cols = {}
    for coord in _COORDS:
        arr = group.get(coord, None)
        if isinstance(arr, zarr.Array):
            values = np.asarray(arr[:])
            cols[coord] = values.astype(object) if values.dtype.kind in "OTU" else values
    if "label" in group:
        arr = group["label"]
        assert isinstance(arr, zarr.Array)
        cols["label"] = np.asarray(arr[:]).astype(object)
    df = pd.DataFrame(cols)
    df.insert(0, "trace", np.arange(len(df), dtype=np.int64))
    df.insert(0, "group", name)
    return df


def _flat_channels(location: str) -> set[tuple[str, int]]:
    """(channel, day_ns) pairs whose channel-day is flagged flat (a dead channel)."""
    days = read_table(location, "channel_days")
    if days.empty or "flags" not in days.columns:
        return set()
    flat = days[(days["flags"].to_numpy().astype(np.int64) & int(Flag.FLAT)) != 0]
    return {(str(c), int(d)) for c, d in zip(flat["channel"], flat["day_ns"], strict=True)}


def _mark_flat(df: pd.DataFrame, flat: set[tuple[str, int]]) -> np.ndarray:
    flags = df["flags"].to_numpy().astype(np.int64)
    if not flat:
        return flags
    for i, (net, sta, loc, chans, start) in enumerate(
        zip(
            df["network"],
            df["station"],
            df["location"],
            df["channels"],
            df["window_start"],
            strict=True,
        )
    ):
        day = int(start) // NS_PER_DAY * NS_PER_DAY
        for code in str(chans).split(","):
            nslc = f"{net}.{sta}.{loc}.{code}"
            if code and ((nslc, day) in flat or (nslc, day + NS_PER_DAY) in flat):
                flags[i] |= int(Flag.FLAT)
    return flags


def list_examples(location: str) -> pd.DataFrame:
    """One row per learnable window of ``events/`` and ``noise/``, in store order.

    Columns: ``group`` (``events`` | ``noise``), ``trace`` (index in that group),
    ``trace_key``, ``event_id`` (noise: a unique pseudo id ``noise:<trace_key>``),
    ``network``, ``station``, ``location``, ``channel_set``, ``label`` (a value of
    :data:`CLASSES`), ``flags`` (quality flags, with ``flat`` added where a component's
    channel-day is dead) and ``flag_names``, ``has_z``/``has_n``/``has_e``, ``site`` (the
    0.25-degree cell of the event location, for noise of the station; ``event:<id>``, or for
    noise ``day:<YYYY-MM-DD>``, where the location is unknown) and ``origin_time`` (UTC; noise: the
    window's reference time).

    Events whose type maps to no class, and windows not written yet, are left out (logged
    with counts); flagged windows are kept and marked in ``flags``.
    """
    root = _open(location)
    if root is None:
        raise StoreError(f"no seismoflow store at {location}; run `seismoflow ingest` first")
    catalog = read_table(location, "catalog")
    where = {}
    if len(catalog):
        where = {
            str(e): (float(a), float(o))
            for e, a, o in zip(
                catalog["event_id"], catalog["latitude"], catalog["longitude"], strict=True
            )
        }
    flat = _flat_channels(location)
    frames = []
    for name in GROUPS:
        group = root.get(name, None)
        if not isinstance(group, zarr.Group) or "trace_key" not in group:
            continue
        df = _group_frame(group, name)
        if df.empty:
            continue
        # The window ledger is the record of written traces (the arrays' copies are
        # refreshed when a run finalizes the store).
        done = written_traces(location, group)
        df["written_at"] = [done.get(t, (0, NAT))[1] for t in df["trace"]]
        df["flags"] = np.array([done.get(t, (0, NAT))[0] for t in df["trace"]], dtype=np.uint32)
        unwritten = df["written_at"].to_numpy() == NAT
        if name == EVENTS:
            labels, unknown = [], set()
            for t in df["event_type"]:
                try:
                    labels.append(event_class(str(t)))
                except KeyError:
                    unknown.add(str(t))
                    labels.append(None)
            if unknown:
                log.warning("event types outside the class table, left out: %s", unknown)
            df["label"] = labels
            sites = [
                site_cell(*where.get(str(e), (np.nan, np.nan))) or f"event:{e}"
                for e in df["event_id"]
            ]
        else:
            df["event_id"] = [f"noise:{k}" for k in df["trace_key"]]
            # Without coordinates, noise is grouped by its UTC day: stations recording the
            # same day in one record (an array such as RockNet's) stay on one side.
            sites = [
                site_cell(float(a), float(o))
                or f"day:{np.datetime64(int(t), 'ns').astype('datetime64[D]')}"
                for a, o, t in zip(
                    df["station_latitude"], df["station_longitude"], df["window_start"], strict=True
                )
            ]
            df["origin_time"] = df["origin_time"].where(
                df["origin_time"].to_numpy() != NAT, df["window_start"]
            )
        df["site"] = sites
        keep = df["label"].notna().to_numpy() & ~unwritten
        if (~keep).any():
            log.info(
                "%s: %d windows left out (%d unwritten, %d without a class)",
                name,
                int((~keep).sum()),
                int(unwritten.sum()),
                int(df["label"].isna().sum()),
            )
        df["flags"] = _mark_flat(df, flat)
        df = df[keep]
        comps = [str(c).split(",") + ["", "", ""] for c in df["channels"]]
        df = df.assign(
            has_z=[bool(c[0]) for c in comps],
            has_n=[bool(c[1]) for c in comps],
            has_e=[bool(c[2]) for c in comps],
            flag_names=[
                ",".join(f.name.lower() for f in Flag if f.name and int(v) & f) for v in df["flags"]
            ],
        )
        frames.append(df)
    if not frames:
        out = pd.DataFrame({c: pd.Series(dtype=object) for c in EXAMPLE_COLUMNS})
        return out
    out = pd.concat(frames, ignore_index=True)
    out["origin_time"] = pd.to_datetime(out["origin_time"].astype(np.int64), unit="ns")
    out["flags"] = out["flags"].astype(np.int64)
    for col in ("trace_key", "event_id", "network", "station", "location", "channel_set"):
        out[col] = out[col].astype(str)
    out["label"] = pd.Categorical(out["label"].astype(str), categories=list(CLASSES))
    return out[list(EXAMPLE_COLUMNS)].reset_index(drop=True)


def _assign(
    groups: np.ndarray, labels: np.ndarray, fractions: Sequence[float], seed: int
) -> np.ndarray:
    """Assign whole groups to len(fractions) bins, class proportions balanced greedily.

    Groups are placed largest first (ties in random order); each goes to the bin that is,
    for the classes it holds, furthest below its target share.
    """
    frac = np.asarray(fractions, dtype=float)
    frac = frac / frac.sum()
    classes, y = np.unique(labels.astype(str), return_inverse=True)
    uniq, g = np.unique(groups.astype(str), return_inverse=True)
    counts = np.zeros((len(uniq), len(classes)))
    np.add.at(counts, (g, y), 1)
    total = counts.sum(axis=0)
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(uniq)), -counts.sum(axis=1)))
    filled = np.zeros((len(frac), len(classes)))
    where = np.empty(len(uniq), dtype=np.int64)
    for gi in order:
        v = counts[gi]
        share = (filled + v) / (frac[:, None] * total[None, :])
        cost = (share * (v / total)[None, :]).sum(axis=1)
        # Break exact ties by the emptiest bin overall, then at random.
        cost = cost + 1e-9 * filled.sum(axis=1) / frac + 1e-12 * rng.random(len(frac))
        where[gi] = int(np.argmin(cost))
        filled[where[gi]] += v
    return where[g]


def site_folds(examples: pd.DataFrame, n_folds: int, seed: int) -> np.ndarray:
    """Fold id (0..n_folds-1) per row, grouped by ``site``: no site is in two folds.

    Classes are balanced across folds as far as whole sites allow.
    """
    if n_folds < 2:
        raise ValueError(f"n_folds={n_folds}: cross-validation needs at least 2 folds")
    n_sites = examples["site"].nunique()
    if n_sites < n_folds:
        raise ValueError(f"{n_sites} sites cannot fill {n_folds} folds; use fewer folds")
    return _assign(
        examples["site"].to_numpy(),
        examples["label"].astype(str).to_numpy(),
        [1.0] * n_folds,
        seed,
    )


def event_split(
    examples: pd.DataFrame,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    by_site: bool = True,
) -> np.ndarray:
    """``"train"``/``"val"``/``"test"`` per row, grouped by event (never one event on two
    sides) and, with ``by_site`` and enough sites (>= 10 per side's share), by site."""
    if len(fractions) != 3 or min(fractions) <= 0:
        raise ValueError(f"fractions {fractions} must be three positive shares")
    groups = examples["event_id"].to_numpy().astype(str)
    if by_site:
        n_sites = examples["site"].nunique()
        if n_sites * min(fractions) / sum(fractions) >= 3:
            groups = examples["site"].to_numpy().astype(str)
    where = _assign(groups, examples["label"].astype(str).to_numpy(), fractions, seed)
    return np.array(["train", "val", "test"], dtype=object)[where]
