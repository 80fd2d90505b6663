"""What to request: regions, channel sets by priority, and dataselect bulk lines.

Plain functions over the flat tables of :mod:`seismoflow.archive.metadata` (``catalog`` and
``channels``), so they are tested without any service.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from obspy.geodetics import locations2degrees

from seismoflow.archive.metadata import OPEN_END
from seismoflow.archive.windows import READ_MARGIN_S, p_travel_time_s
from seismoflow.times import NAT, NS_PER_DAY, NS_PER_S, from_ns

#: Extra seconds fetched on both sides of a window, beyond the resampler's read margin.
FETCH_PAD_S = 5.0
WILDCARD_LOCATION = "*"


@dataclass(frozen=True)
class Region:
    """A box, a circle (degrees) or the whole Earth (all ``None``)."""

    minlatitude: float | None = None
    maxlatitude: float | None = None
    minlongitude: float | None = None
    maxlongitude: float | None = None
    latitude: float | None = None
    longitude: float | None = None
    maxradius: float | None = None

    def __post_init__(self) -> None:
        box = [self.minlatitude, self.maxlatitude, self.minlongitude, self.maxlongitude]
        circle = [self.latitude, self.longitude, self.maxradius]
        if any(v is not None for v in box) and any(v is not None for v in circle):
            raise ValueError(
                "give either a box (--minlatitude ...) or a circle (--latitude --longitude "
                "--maxradius), not both"
            )
        if any(v is not None for v in circle) and not all(v is not None for v in circle):
            raise ValueError("a circle needs --latitude, --longitude and --maxradius")

    def query(self) -> dict[str, float]:
        """FDSN query parameters of the region (none for the whole Earth)."""
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def widened(self, degrees: float) -> Region:
        """The region grown by ``degrees`` on every side: where stations of its events lie."""
        if self.maxradius is not None:
            return Region(
                latitude=self.latitude,
                longitude=self.longitude,
                maxradius=min(180.0, self.maxradius + degrees),
            )
        if all(v is None for v in self.__dict__.values()):
            return self
        lat0 = max(-90.0, (self.minlatitude if self.minlatitude is not None else -90.0) - degrees)
        lat1 = min(90.0, (self.maxlatitude if self.maxlatitude is not None else 90.0) + degrees)
        lon0 = self.minlongitude if self.minlongitude is not None else -180.0
        lon1 = self.maxlongitude if self.maxlongitude is not None else 180.0
        # Near the poles a degree of distance spans many degrees of longitude.
        worst = max(abs(lat0), abs(lat1))
        stretch = degrees / max(math.cos(math.radians(worst)), 1e-6) if worst < 89.0 else 360.0
        lon0, lon1 = lon0 - stretch, lon1 + stretch
        if lon1 - lon0 >= 360.0 or worst >= 89.0:
            lon0, lon1 = -180.0, 180.0
        else:
            lon0, lon1 = max(-180.0, lon0), min(180.0, lon1)
        return Region(lat0, lat1, lon0, lon1)


@dataclass(frozen=True, order=True)
class BulkLine:
    """One dataselect request line and the event (or ``''``) it serves."""

    network: str
    station: str
    location: str
    channel: str
    start_ns: int
    end_ns: int
    event_id: str = ""

    def as_tuple(self) -> tuple[str, str, str, str, object, object]:
        """The line as ObsPy's ``get_waveforms_bulk`` takes it."""
        loc = self.location if self.location else "--"
        return (
            self.network,
            self.station,
            loc,
            self.channel,
            from_ns(self.start_ns),
            from_ns(self.end_ns),
        )

    def ledger_key(self, provider: str) -> tuple[str, str, str, str, str, int, int]:
        return (
            provider,
            self.network,
            self.station,
            self.location,
            self.channel,
            self.start_ns,
            self.end_ns,
        )


def _component(code: str) -> str:
    return code[-1:] if code else ""


def rank_sets(
    pairs: Iterable[tuple[str, str]], priorities: Sequence[str]
) -> list[tuple[str, list[str]]]:
    """``(location, channel)`` pairs grouped into channel sets, best first.

    A complete three-component set (Z and two horizontals) of any priority beats a partial
    set; among equals the earlier pattern wins, then the location with more components,
    then the smaller location code.
    """
    unique = sorted(set(pairs))
    ranked: list[tuple[tuple[int, int, int, str], tuple[str, list[str]]]] = []
    for rank, pattern in enumerate(priorities):
        by_loc: dict[str, list[str]] = {}
        for loc, cha in unique:
            if fnmatch.fnmatchcase(cha, pattern):
                by_loc.setdefault(loc, []).append(cha)
        for loc, codes in sorted(by_loc.items()):
            comps = {_component(c) for c in codes}
            complete = "Z" in comps and len(comps & {"N", "E", "1", "2"}) >= 2
            ranked.append(((0 if complete else 1, rank, -len(codes), loc), (loc, codes)))
    out: list[tuple[str, list[str]]] = []
    for _, chosen in sorted(ranked):
        if chosen not in out:
            out.append(chosen)
    return out


def channel_sets(channels: pd.DataFrame, priorities: Sequence[str]) -> list[tuple[str, list[str]]]:
    """The channel sets of one station's channel table, best first (:func:`rank_sets`)."""
    pairs = zip(map(str, channels["location"]), map(str, channels["channel"]), strict=True)
    return rank_sets(pairs, priorities)


def choose_channel_set(
    channels: pd.DataFrame, priorities: Sequence[str]
) -> tuple[str, list[str]] | None:
    """The best channel set of one station (:func:`channel_sets`), or ``None``."""
    sets = channel_sets(channels, priorities)
    return sets[0] if sets else None


#: One (event, station) or (station, day) to fetch: its channel sets' lines, best first. The
#: fetch asks for the first set, and for the next one only if a set had no data at all.
Candidate = tuple[tuple[BulkLine, ...], ...]


def _open_end(channels: pd.DataFrame) -> pd.Series:
    """End times with NaT (no end date: still operating) as the far future."""
    end = channels["end_ns"].astype("int64")
    return end.where(end != NAT, OPEN_END)


def _start(channels: pd.DataFrame) -> pd.Series:
    start = channels["start_ns"].astype("int64")
    return start.where(start != NAT, -OPEN_END)


def _active(channels: pd.DataFrame, t_ns: int) -> pd.DataFrame:
    return channels[(_start(channels) <= t_ns) & (_open_end(channels) >= t_ns)]


def station_positions(channels: pd.DataFrame) -> pd.DataFrame:
    """One row per station epoch with coordinates: network, station, start/end, lat, lon."""
    cols = ["network", "station", "start_ns", "end_ns", "latitude", "longitude"]
    if channels.empty:
        return pd.DataFrame(columns=cols)
    known = channels.dropna(subset=["latitude", "longitude"])
    return known[cols].drop_duplicates(["network", "station", "start_ns"]).reset_index(drop=True)


def event_candidates(
    catalog: pd.DataFrame,
    channels: pd.DataFrame,
    priorities: Sequence[str],
    max_distance_deg: float,
    pre_s: float,
    post_s: float,
    reference: str = "origin",
) -> list[Candidate]:
    """What to ask for every event and every station within ``max_distance_deg``.

    The span is the event window (``pre_s`` before the origin or the predicted P, ``post_s``
    after) plus the resampler's read margin and a pad, so windows cut from fetched data equal
    windows cut from a full archive. Stations whose metadata list no channel active at the
    origin are asked for with each priority pattern (``*`` location); the best set found in
    the answer is kept (:func:`keep_best_set`).
    """
    if catalog.empty or channels.empty:
        return []
    out: list[Candidate] = []
    pad_ns = round((READ_MARGIN_S + FETCH_PAD_S) * NS_PER_S)
    stations = station_positions(channels)
    by_station = {k: g for k, g in channels.groupby(["network", "station"], sort=True)}
    for ev in catalog.itertuples(index=False):
        origin = int(ev.origin_time_ns)
        lat, lon = float(ev.latitude), float(ev.longitude)
        if np.isnan(lat) or np.isnan(lon):
            continue
        here = _active(stations, origin).drop_duplicates(["network", "station"])
        if here.empty:
            continue
        dist = np.asarray(
            locations2degrees(lat, lon, here["latitude"].to_numpy(), here["longitude"].to_numpy())
        )
        depth = float(ev.depth_km) if not np.isnan(float(ev.depth_km)) else 0.0
        for st, d in zip(here.itertuples(index=False), dist, strict=True):
            if d > max_distance_deg:
                continue
            reference_ns = origin
            if reference == "p":
                tt = p_travel_time_s(float(d), depth)
                reference_ns = origin + round((tt or 0.0) * NS_PER_S)
            start = reference_ns - round(pre_s * NS_PER_S) - pad_ns
            end = reference_ns + round(post_s * NS_PER_S) + pad_ns
            rows = by_station[(st.network, st.station)]
            active = _active(rows[rows["channel"] != ""], origin)
            sets = channel_sets(active, priorities)
            # Metadata without a matching channel epoch: let the data say what exists.
            targets = [[(loc, c) for c in codes] for loc, codes in sets] or [
                [(WILDCARD_LOCATION, p) for p in priorities]
            ]
            eid = str(ev.event_id)
            out.append(
                tuple(
                    tuple(BulkLine(st.network, st.station, loc, cha, start, end, eid)
                          for loc, cha in target)
                    for target in targets
                )
            )  # fmt: skip
    return out


def continuous_candidates(
    channels: pd.DataFrame,
    priorities: Sequence[str],
    start_ns: int,
    end_ns: int,
    networks: Iterable[str] | None = None,
) -> list[Candidate]:
    """Station-days (UTC days) over ``start_ns .. end_ns``, channel sets best first."""
    if channels.empty:
        return []
    wanted = set(networks) if networks else None
    out: list[Candidate] = []
    first_day = start_ns - start_ns % NS_PER_DAY
    for (net, sta), rows in channels.groupby(["network", "station"], sort=True):
        if wanted is not None and net not in wanted:
            continue
        with_codes = rows[rows["channel"] != ""]
        for day in range(first_day, end_ns, NS_PER_DAY):
            t0, t1 = max(day, start_ns), min(day + NS_PER_DAY, end_ns)
            active = with_codes[(_start(with_codes) < t1) & (_open_end(with_codes) > t0)]
            sets = channel_sets(active, priorities)
            if sets:
                out.append(
                    tuple(
                        tuple(BulkLine(str(net), str(sta), loc, c, t0, t1) for c in codes)
                        for loc, codes in sets
                    )
                )
    return out


LineKey = tuple[str, str, str, str, str, int, int]


def next_lines(
    candidates: Sequence[Candidate], provider: str, status: dict[LineKey, str]
) -> tuple[list[BulkLine], int]:
    """Lines to ask for now, given the ledger's ``status`` of lines asked before.

    For each candidate the first channel set that is not finished is asked for (its lines
    without a final answer); a set finished with no data at all hands over to the next set.
    Returns the lines and how many lines were already answered (data or no data).
    """
    todo: list[BulkLine] = []
    answered = 0
    for sets in candidates:
        for lines in sets:
            states = [status.get(ln.ledger_key(provider)) for ln in lines]
            final = [st in ("data", "nodata") for st in states]
            answered += sum(final)
            if all(final):
                if "data" in states:
                    break  # this set is done
                continue  # no data at all: try the next set
            todo += [ln for ln, f in zip(lines, final, strict=True) if not f]
            break
    return todo, answered


def keep_best_set(
    found: Iterable[tuple[str, str]], priorities: Sequence[str]
) -> set[tuple[str, str]]:
    """Of the ``(location, channel)`` pairs wildcard lines returned, the one set to keep."""
    sets = rank_sets(found, priorities)
    return {(sets[0][0], c) for c in sets[0][1]} if sets else set()


def batches(lines: Sequence[BulkLine], per_request: int, by_event: bool) -> list[list[BulkLine]]:
    """Requests: lines of one event together (or of one day), at most ``per_request``."""
    groups: dict[object, list[BulkLine]] = {}
    for line in sorted(lines):
        key: object = line.event_id if by_event else (line.start_ns // NS_PER_DAY)
        groups.setdefault(key, []).append(line)
    out: list[list[BulkLine]] = []
    for key in sorted(groups, key=str):
        group = groups[key]
        out += [group[i : i + per_request] for i in range(0, len(group), per_request)]
    return out
