"""StationXML and QuakeML into flat tables, and lookups against them.

Tables keep every channel epoch (and a ``channel == ''`` row for every station epoch, with
the station's own dates), and every event with its QuakeML event type, so the store holds
what the source said even where it is incomplete.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import obspy
import pandas as pd

from seismoflow.ids import ChannelId, InvalidCodeError, validate_event_id
from seismoflow.times import NAT, to_ns

CHANNEL_COLUMNS = [
    "network",
    "station",
    "location",
    "channel",
    "start_ns",
    "end_ns",
    "latitude",
    "longitude",
    "elevation_m",
    "depth_m",
    "sampling_rate",
    "azimuth",
    "dip",
    "has_response",
    "description",
]
CATALOG_COLUMNS = [
    "event_id",
    "origin_time_ns",
    "latitude",
    "longitude",
    "depth_km",
    "magnitude",
    "magnitude_type",
    "event_type",
    "event_type_certainty",
    "description",
]


OPEN_END = int(np.iinfo(np.int64).max)


def _ns_or_nat(t: obspy.UTCDateTime | None) -> int:
    """Nanoseconds; NaT if unset; far-future end dates (e.g. 2599) clamp to ``OPEN_END``."""
    return NAT if t is None else min(to_ns(t), OPEN_END)


def _num(x: object) -> float:
    return float(x) if x is not None else np.nan  # type: ignore[arg-type]


def inventory_table(inv: obspy.Inventory) -> pd.DataFrame:
    """One row per channel epoch, and one row with empty ``channel`` per station epoch.

    The station rows carry the station epoch's own dates: a station whose epoch covers the
    data but lists no channel epoch for it (17 stations of the shared archive) still has
    known coordinates.
    """
    rows = []
    for net in inv:
        for sta in net:
            base = {
                "network": net.code,
                "station": sta.code,
                "latitude": _num(sta.latitude),
                "longitude": _num(sta.longitude),
                "elevation_m": _num(sta.elevation),
            }
            rows.append(
                {
                    **base,
                    "location": "",
                    "channel": "",
                    "start_ns": _ns_or_nat(sta.start_date),
                    "end_ns": _ns_or_nat(sta.end_date),
                    "depth_m": np.nan,
                    "sampling_rate": np.nan,
                    "azimuth": np.nan,
                    "dip": np.nan,
                    "has_response": False,
                    "description": str(sta.description or ""),
                }
            )
            for cha in sta.channels:
                rows.append(
                    {
                        **base,
                        "location": cha.location_code or "",
                        "channel": cha.code,
                        "latitude": _num(
                            cha.latitude if cha.latitude is not None else sta.latitude
                        ),
                        "longitude": _num(
                            cha.longitude if cha.longitude is not None else sta.longitude
                        ),
                        "elevation_m": _num(
                            cha.elevation if cha.elevation is not None else sta.elevation
                        ),
                        "start_ns": _ns_or_nat(cha.start_date),
                        "end_ns": _ns_or_nat(cha.end_date),
                        "depth_m": _num(cha.depth),
                        "sampling_rate": _num(cha.sample_rate),
                        "azimuth": _num(cha.azimuth),
                        "dip": _num(cha.dip),
                        "has_response": cha.response is not None
                        and bool(cha.response.response_stages),
                        "description": str(sta.description or ""),
                    }
                )
    df = pd.DataFrame(rows, columns=CHANNEL_COLUMNS)
    return df.astype({"start_ns": "int64", "end_ns": "int64", "has_response": bool})


def catalog_table(cat: obspy.Catalog) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """One row per event with a valid resource id; invalid ones returned as (id, reason)."""
    rows, rejected = [], []
    for ev in cat:
        event_id = str(ev.resource_id.id)
        try:
            validate_event_id(event_id)
        except InvalidCodeError as exc:
            rejected.append((event_id, f"{exc}; event not ingested"))
            continue
        origin = ev.preferred_origin() or (ev.origins[0] if ev.origins else None)
        if origin is None or origin.time is None:
            rejected.append((event_id, "event has no origin time; event not ingested"))
            continue
        mag = ev.preferred_magnitude() or (ev.magnitudes[0] if ev.magnitudes else None)
        rows.append(
            {
                "event_id": event_id,
                "origin_time_ns": to_ns(origin.time),
                "latitude": _num(origin.latitude),
                "longitude": _num(origin.longitude),
                "depth_km": _num(origin.depth) / 1000.0,
                "magnitude": _num(mag.mag) if mag else np.nan,
                "magnitude_type": (mag.magnitude_type or "") if mag else "",
                "event_type": str(ev.event_type or ""),
                "event_type_certainty": str(ev.event_type_certainty or ""),
                "description": " | ".join(d.text for d in ev.event_descriptions if d.text),
            }
        )
    df = pd.DataFrame(rows, columns=CATALOG_COLUMNS)
    return df.astype({"origin_time_ns": "int64"}), rejected


@dataclass(frozen=True)
class StationInfo:
    latitude: float
    longitude: float
    elevation_m: float
    sampling_rate: float | None  # of the covering channel epoch; None if no channel epoch


class MetadataIndex:
    """Look up the channel (or station) epoch covering a time."""

    def __init__(self, channels: pd.DataFrame) -> None:
        self._by_channel: dict[tuple[str, str, str, str], list[tuple[int, int, StationInfo]]] = {}
        self._by_station: dict[tuple[str, str], list[tuple[int, int, StationInfo]]] = {}
        by_station_epoch: dict[tuple[str, str], list[tuple[int, int, StationInfo]]] = {}
        by_channel_epoch: dict[tuple[str, str], list[tuple[int, int, StationInfo]]] = {}
        for r in channels.itertuples(index=False):
            end = int(r.end_ns) if int(r.end_ns) != NAT else np.iinfo(np.int64).max
            start = int(r.start_ns) if int(r.start_ns) != NAT else np.iinfo(np.int64).min
            rate = float(r.sampling_rate)
            info = StationInfo(
                float(r.latitude),
                float(r.longitude),
                float(r.elevation_m),
                None if np.isnan(rate) else rate,
            )
            if r.channel:
                key = (str(r.network), str(r.station), str(r.location), str(r.channel))
                self._by_channel.setdefault(key, []).append((start, end, info))
            entry = (start, end, StationInfo(info.latitude, info.longitude, info.elevation_m, None))
            (by_channel_epoch if r.channel else by_station_epoch).setdefault(
                (str(r.network), str(r.station)), []
            ).append(entry)
        # Station epochs (channel '') first: their coordinates are the station's own, the
        # same whichever channels a document happens to list; channel epochs are a fallback.
        for sta in by_station_epoch.keys() | by_channel_epoch.keys():
            self._by_station[sta] = by_station_epoch.get(sta, []) + by_channel_epoch.get(sta, [])

    def channel(self, ch: ChannelId, t_ns: int) -> StationInfo | None:
        """The channel epoch covering ``t_ns``, if any."""
        for start, end, info in self._by_channel.get(
            (ch.network, ch.station, ch.location, ch.channel), []
        ):
            if start <= t_ns <= end:
                return info
        return None

    def station(self, network: str, station: str, t_ns: int) -> StationInfo | None:
        """Coordinates from any epoch of the station covering ``t_ns``."""
        for start, end, info in self._by_station.get((network, station), []):
            if start <= t_ns <= end:
                return info
        return None
