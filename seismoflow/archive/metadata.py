"""StationXML and QuakeML into flat tables, and lookups against them.

Tables keep every channel epoch (and a ``channel == ''`` row for every station epoch, with
the station's own dates), and every event with its QuakeML event type, so the store holds
what the source said even where it is incomplete.
"""

from __future__ import annotations

import gzip
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import obspy
import pandas as pd
from lxml import etree

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


def _station_row(
    network: str,
    station: str,
    coords: tuple[float, float, float],
    start: obspy.UTCDateTime | None,
    end: obspy.UTCDateTime | None,
    description: str,
) -> dict[str, Any]:
    """The table's row of a station epoch (``channel == ''``)."""
    lat, lon, elev = coords
    return {
        "network": network,
        "station": station,
        "location": "",
        "channel": "",
        "start_ns": _ns_or_nat(start),
        "end_ns": _ns_or_nat(end),
        "latitude": lat,
        "longitude": lon,
        "elevation_m": elev,
        "depth_m": np.nan,
        "sampling_rate": np.nan,
        "azimuth": np.nan,
        "dip": np.nan,
        "has_response": False,
        "description": description,
    }


def _channel_row(
    station: dict[str, Any],
    location: str,
    channel: str,
    coords: tuple[float, float, float],
    dates: tuple[obspy.UTCDateTime | None, obspy.UTCDateTime | None],
    values: tuple[float, float, float, float],
    has_response: bool,
) -> dict[str, Any]:
    """The table's row of a channel epoch of ``station`` (its station row): coordinates
    (NaN: the station's), dates, then depth, sampling rate, azimuth and dip."""
    own = [c if c == c else station[k] for c, k in zip(coords, _COORDS, strict=True)]
    depth, rate, azimuth, dip = values
    return {
        **station,
        "location": location,
        "channel": channel,
        "start_ns": _ns_or_nat(dates[0]),
        "end_ns": _ns_or_nat(dates[1]),
        **dict(zip(_COORDS, own, strict=True)),
        "depth_m": depth,
        "sampling_rate": rate,
        "azimuth": azimuth,
        "dip": dip,
        "has_response": has_response,
    }


_COORDS = ("latitude", "longitude", "elevation_m")


def inventory_table(inv: obspy.Inventory) -> pd.DataFrame:
    """One row per channel epoch, and one row with empty ``channel`` per station epoch.

    The station rows carry the station epoch's own dates: a station whose epoch covers the
    data but lists no channel epoch for it (17 stations of the shared archive) still has
    known coordinates.
    """
    rows = []
    for net in inv:
        for sta in net:
            coords = (_num(sta.latitude), _num(sta.longitude), _num(sta.elevation))
            text = str(sta.description or "")
            base = _station_row(net.code, sta.code, coords, sta.start_date, sta.end_date, text)
            rows.append(base)
            for cha in sta.channels:
                rows.append(
                    _channel_row(
                        base,
                        cha.location_code or "",
                        cha.code,
                        (_num(cha.latitude), _num(cha.longitude), _num(cha.elevation)),
                        (cha.start_date, cha.end_date),
                        (_num(cha.depth), _num(cha.sample_rate), _num(cha.azimuth), _num(cha.dip)),
                        cha.response is not None and bool(cha.response.response_stages),
                    )
                )
    df = pd.DataFrame(rows, columns=CHANNEL_COLUMNS)
    return df.astype({"start_ns": "int64", "end_ns": "int64", "has_response": bool})


STATIONXML_NS = "http://www.fdsn.org/xml/station/1"  # every FDSN StationXML 1.x version


def read_channel_table(source: str | Path | bytes) -> pd.DataFrame:
    """:func:`inventory_table` of a StationXML file or document, read as a stream.

    FDSN StationXML is parsed here one station at a time, keeping only what the table holds,
    and each station's element tree (its responses included) is freed once read. ObsPy's
    ``read_inventory`` builds every response stage as Python objects first: for the shared
    archive's 1.4 MB ``stations.xml.gz`` that was ~8 s of CPU and a 330 MB peak. The rows
    are the same (tested against ObsPy), with one difference: ObsPy drops a channel epoch
    that lacks any of latitude, longitude, elevation or depth (with a warning), and its
    data would then read as having no metadata; here it is kept, with the station's
    coordinates where its own are missing. Any other format ObsPy reads (SC3ML, dataless
    SEED, RESP, FDSN station text, ...) goes through ObsPy.
    """
    raw = Path(source).read_bytes() if isinstance(source, str | Path) else bytes(source)
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if _root_namespace(raw) != STATIONXML_NS:
        return inventory_table(obspy.read_inventory(io.BytesIO(raw)))
    rows = [row for station in _stations(raw) for row in _station_rows(*station)]
    df = pd.DataFrame(rows, columns=CHANNEL_COLUMNS)
    return df.astype({"start_ns": "int64", "end_ns": "int64", "has_response": bool})


def _root_namespace(raw: bytes) -> str | None:
    try:
        for _, elem in etree.iterparse(io.BytesIO(raw), events=("start",)):
            return str(etree.QName(elem).namespace)
    except etree.XMLSyntaxError:
        return None
    return None


def _stations(raw: bytes) -> Iterator[tuple[str, Any]]:
    """``(network code, Station element)`` for every station, each freed after use."""
    tag = f"{{{STATIONXML_NS}}}Station"
    for _, elem in etree.iterparse(io.BytesIO(raw), events=("end",), tag=tag):
        yield str(elem.getparent().get("code") or "").strip(), elem
        elem.clear(keep_tail=True)
        while elem.getprevious() is not None:  # drop stations already read
            del elem.getparent()[0]


def _find(elem: Any, name: str) -> Any:
    return elem.find(f"{{{STATIONXML_NS}}}{name}")


def _float(elem: Any, name: str) -> float | None:
    """A float child as ObsPy reads it: ``None`` if absent, not a number or NaN."""
    child = _find(elem, name)
    if child is None:
        return None
    try:
        value = float(child.text)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _date(elem: Any, name: str) -> obspy.UTCDateTime | None:
    value = elem.get(name)
    if value is None:
        return None
    try:
        return obspy.UTCDateTime(value)
    except Exception:  # noqa: BLE001 - as ObsPy: an unreadable date is an unset one
        return None


def _has_response(channel: Any) -> bool:
    """ObsPy's ``response is not None and bool(response.response_stages)``: a Response
    element with at least one non-empty Stage."""
    response = _find(channel, "Response")
    if response is None:
        return False
    return any(len(stage) for stage in response.iterfind(f"{{{STATIONXML_NS}}}Stage"))


def _station_rows(network: str, sta: Any) -> list[dict[str, Any]]:
    """The rows :func:`inventory_table` makes of one station element."""
    description = _find(sta, "Description")
    text = str(description.text or "") if description is not None else ""
    code = str(sta.get("code") or "").strip()
    dates = (_date(sta, "startDate"), _date(sta, "endDate"))
    base = _station_row(network, code, _floats(sta, _XML_COORDS), *dates, text)
    rows = [base]
    for cha in sta.iterfind(f"{{{STATIONXML_NS}}}Channel"):
        rows.append(
            _channel_row(
                base,
                str(cha.get("locationCode") or "").strip(),
                str(cha.get("code") or "").strip(),
                _floats(cha, _XML_COORDS),
                (_date(cha, "startDate"), _date(cha, "endDate")),
                _floats(cha, ("Depth", "SampleRate", "Azimuth", "Dip")),
                _has_response(cha),
            )
        )
    return rows


_XML_COORDS = ("Latitude", "Longitude", "Elevation")


def _floats(elem: Any, names: tuple[str, ...]) -> Any:
    """``_num`` of each float child ``names`` (NaN where absent or unreadable)."""
    return tuple(_num(_float(elem, n)) for n in names)


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
