"""Which event windows to cut, and cutting one (plain functions, no Prefect).

A window is one trace per event and station channel set (``NET.STA.LOC`` + band and
instrument codes, e.g. ``HH?``) with components Z, N, E (1 and 2 count as N and E).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from obspy.geodetics import locations2degrees

from seismoflow.archive.metadata import MetadataIndex
from seismoflow.ids import ChannelId
from seismoflow.signal import resample_pieces
from seismoflow.storage.schema import COMPONENTS, EventWindowLayout, Flag
from seismoflow.times import NAT, NS_PER_DAY, NS_PER_S

COMPONENT_OF = {"Z": "Z", "N": "N", "1": "N", "E": "E", "2": "E"}
# Data read beyond the window on each side so filters and interpolation have no edge.
READ_MARGIN_S = 10.0
# Widest span a window of an event can take after its origin: the largest P time.
MAX_P_TIME_NS = 30 * 60 * NS_PER_S


@dataclass(frozen=True)
class WindowSpec:
    """One event-window trace to cut; fields mirror ``storage.schema.TRACE_COORDS``."""

    trace_key: str
    event_id: str
    network: str
    station: str
    location: str
    channel_set: str
    channels: str  # "Z,N,E" channel codes, empty where missing
    station_latitude: float
    station_longitude: float
    station_elevation: float
    distance_deg: float
    origin_time: int
    reference_time: int
    window_start: int
    event_type: str
    magnitude: float
    source_sampling_rate: float
    flags: int

    def as_row(self) -> dict[str, object]:
        return {**asdict(self), "written_at": NAT}

    def component_channels(self) -> list[ChannelId | None]:
        return [
            ChannelId(self.network, self.station, self.location, code) if code else None
            for code in self.channels.split(",")
        ]


@functools.lru_cache(maxsize=1)
def _taup_model() -> object:
    from obspy.taup import TauPyModel

    return TauPyModel(model="iasp91")


def p_travel_time_s(distance_deg: float, depth_km: float) -> float | None:
    """First P-type arrival (iasp91) in seconds, or ``None`` if there is none."""
    model = _taup_model()
    arrivals = model.get_travel_times(  # type: ignore[attr-defined]
        source_depth_in_km=max(0.0, depth_km),
        distance_in_degree=distance_deg,
        phase_list=["P", "p", "Pn", "Pg", "Pdiff"],
    )
    return float(arrivals[0].time) if arrivals else None


def plan_windows(
    catalog: pd.DataFrame,
    channel_days: pd.DataFrame,
    metadata: MetadataIndex,
    layout: EventWindowLayout,
    travel_time: Callable[[float, float], float | None] = p_travel_time_s,
) -> list[WindowSpec]:
    """Every (event, channel set) whose stored data overlap the event's window."""
    if catalog.empty or channel_days.empty:
        return []
    days = channel_days[channel_days["n_samples"] > 0]
    # Recorded extents per channel, indexed once (not a scan of the table per component).
    spans = {
        str(channel): (rows["first_ns"].to_numpy(), rows["last_ns"].to_numpy())
        for channel, rows in days.groupby("channel", sort=False)
    }
    pre_ns, post_ns = round(layout.pre_s * NS_PER_S), round(layout.post_s * NS_PER_S)
    specs: list[WindowSpec] = []
    for ev in catalog.itertuples(index=False):
        origin = int(ev.origin_time_ns)
        horizon = origin + _max_shift_ns(layout)
        near = days[(days["last_ns"] >= origin - pre_ns) & (days["first_ns"] <= horizon + post_ns)]
        groups: dict[tuple[str, str, str, str], dict[str, tuple[str, float]]] = {}
        for row in near.itertuples(index=False):
            ch = ChannelId.parse(str(row.channel))
            comp = COMPONENT_OF.get(ch.component)
            if comp is None:
                continue
            key = (ch.network, ch.station, ch.location, ch.channel_set)
            groups.setdefault(key, {}).setdefault(comp, (ch.channel, float(row.sampling_rate)))
        for (net, sta, loc, chset), comps in sorted(groups.items()):
            spec = _window(
                ev,
                origin,
                net,
                sta,
                loc,
                chset,
                comps,
                metadata,
                layout,
                travel_time,
                pre_ns,
                post_ns,
                spans,
            )
            if spec is not None:
                specs.append(spec)
    return specs


def _max_shift_ns(layout: EventWindowLayout) -> int:
    """Widest shift of a window's reference time after the origin (the largest P time)."""
    return MAX_P_TIME_NS if layout.reference == "p" else 0


def window_days(origins_ns: Iterable[int], layout: EventWindowLayout) -> set[int]:
    """The days (UTC midnights, ns) whose samples a window of an event at one of
    ``origins_ns`` may read (read margins included)."""
    before = round((layout.pre_s + READ_MARGIN_S) * NS_PER_S)
    after = _max_shift_ns(layout) + round((layout.post_s + READ_MARGIN_S) * NS_PER_S)
    days: set[int] = set()
    for origin in origins_ns:
        first = (int(origin) - before) // NS_PER_DAY
        last = (int(origin) + after) // NS_PER_DAY
        days.update(d * NS_PER_DAY for d in range(first, last + 1))
    return days


def _window(
    ev: object,
    origin: int,
    net: str,
    sta: str,
    loc: str,
    chset: str,
    comps: dict[str, tuple[str, float]],
    metadata: MetadataIndex,
    layout: EventWindowLayout,
    travel_time: Callable[[float, float], float | None],
    pre_ns: int,
    post_ns: int,
    spans: dict[str, tuple[np.ndarray, np.ndarray]],
) -> WindowSpec | None:
    flags = 0
    info = metadata.station(net, sta, origin)
    lat = lon = elev = dist = np.nan
    ev_lat, ev_lon = float(ev.latitude), float(ev.longitude)  # type: ignore[attr-defined]
    if info is not None and not np.isnan(info.latitude):
        lat, lon, elev = info.latitude, info.longitude, info.elevation_m
        if not (np.isnan(ev_lat) or np.isnan(ev_lon)):
            dist = float(locations2degrees(ev_lat, ev_lon, lat, lon))
    else:
        flags |= Flag.NO_COORDINATES
    reference = origin
    if layout.reference == "p":
        depth = float(ev.depth_km)  # type: ignore[attr-defined]
        tt = travel_time(dist, 0.0 if np.isnan(depth) else depth) if not np.isnan(dist) else None
        if tt is None:
            flags |= Flag.NO_COORDINATES
        else:
            reference = origin + round(tt * NS_PER_S)
    start, end = reference - pre_ns, reference + post_ns
    codes = [comps.get(c, ("", np.nan))[0] for c in COMPONENTS]
    # Keep only components whose data overlap this (possibly P-shifted) window.
    for i, code in enumerate(codes):
        if not code:
            continue
        first, last = spans.get(f"{net}.{sta}.{loc}.{code}", (np.empty(0), np.empty(0)))
        if not ((last >= start) & (first <= end)).any():
            codes[i] = ""
    if not any(codes):
        return None
    if not all(codes):
        flags |= Flag.MISSING_COMPONENTS
    rates = [comps[c][1] for c, code in zip(COMPONENTS, codes, strict=True) if code]
    event_id = str(ev.event_id)  # type: ignore[attr-defined]
    return WindowSpec(
        trace_key=f"{event_id}|{net}.{sta}.{loc}.{chset}",
        event_id=event_id,
        network=net,
        station=sta,
        location=loc,
        channel_set=chset,
        channels=",".join(codes),
        station_latitude=lat,
        station_longitude=lon,
        station_elevation=elev,
        distance_deg=dist,
        origin_time=origin,
        reference_time=reference,
        window_start=start,
        event_type=str(ev.event_type),  # type: ignore[attr-defined]
        magnitude=float(ev.magnitude),  # type: ignore[attr-defined]
        source_sampling_rate=float(max(rates)),
        flags=flags,
    )


Reader = Callable[[ChannelId, int, int], list[tuple[int, float, np.ndarray]]]


def cut_window(spec: WindowSpec, layout: EventWindowLayout, read: Reader) -> tuple[np.ndarray, int]:
    """Cut and resample one window: ``(components x samples float32, flags)``."""
    n = layout.n_samples
    block = np.full((len(COMPONENTS), n), np.nan, dtype=np.float32)
    margin = round(READ_MARGIN_S * NS_PER_S)
    end = spec.window_start + round(n * NS_PER_S / layout.sampling_rate)
    for i, ch in enumerate(spec.component_channels()):
        if ch is None:
            continue
        pieces = read(ch, spec.window_start - margin, end + margin)
        block[i] = resample_pieces(pieces, spec.window_start, layout.sampling_rate, n)
    flags = spec.flags
    present = [i for i, ch in enumerate(spec.component_channels()) if ch is not None]
    if np.isnan(block[present]).any():
        flags |= Flag.PARTIAL_WINDOW
    return block, flags
