"""fdsnws-station/1 over one parsed Inventory: selection by codes, epochs and geometry.

A station matches when its codes, epoch, box and radius match; when a selection names
locations or channels, it also needs one matching channel (as real services answer).
Lower levels than ``response`` drop responses; ``network`` and ``station`` drop children.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable, Iterable
from typing import Any

from obspy import Inventory, UTCDateTime
from obspy.core.inventory import Channel, Network, Station
from obspy.geodetics import locations2degrees

from tests.fdsnws.params import Selection

_LEVELS = ("network", "station", "channel", "response")


def _epoch_ok(obj: Any, values: dict[str, Any], sel: Selection) -> bool:
    start: UTCDateTime | None = obj.start_date
    end: UTCDateTime | None = obj.end_date
    if not sel.overlaps(start, end):
        return False
    if (x := values.get("startbefore")) is not None and not (start is not None and start < x):
        return False
    if (x := values.get("startafter")) is not None and not (start is not None and start > x):
        return False
    if (x := values.get("endbefore")) is not None and not (end is not None and end < x):
        return False
    return (x := values.get("endafter")) is None or end is None or end > x


def _geometry_ok(station: Station, values: dict[str, Any]) -> bool:
    lat, lon = station.latitude, station.longitude
    if not values["minlatitude"] <= lat <= values["maxlatitude"]:
        return False
    if not values["minlongitude"] <= lon <= values["maxlongitude"]:
        return False
    if values.get("latitude") is None and values.get("longitude") is None:
        return True
    dist = locations2degrees(values.get("latitude", 0.0), values.get("longitude", 0.0), lat, lon)
    return bool(values["minradius"] <= dist <= values["maxradius"])


HasData = Callable[[tuple[str, str, str, str], Selection], bool]


class StationService:
    """Answers station queries from ``inventory``; ``restricted`` networks need credentials.

    ``has_data`` says whether the archive holds data of a channel in a selection's window;
    ``matchtimeseries=true`` keeps only such channels (and the stations that have one).
    """

    def __init__(self, inventory: Inventory, has_data: HasData | None = None) -> None:
        self.inventory = inventory
        self.has_data = has_data

    def query(
        self, values: dict[str, Any], selections: list[Selection], restricted: Iterable[str] = ()
    ) -> Inventory | None:
        """The matching inventory at ``values['level']``, or None when nothing matches."""
        level = _LEVELS.index(values["level"])
        hidden = set(restricted) if not values["includerestricted"] else set()
        networks: list[Network] = []
        for net in self.inventory.networks:
            if net.code in hidden or (
                not values["includerestricted"] and net.restricted_status == "closed"
            ):
                continue
            sels = [s for s in selections if s.match(0, net.code) and _epoch_ok(net, values, s)]
            found = (self._station(net.code, sta, sels, values) for sta in net.stations)
            stations = [st for st in found if st is not None]  # a Station is falsy without channels
            if not stations:
                continue
            out = copy.copy(net)
            out.stations = stations if level > 0 else []
            networks.append(out)
        if not networks:
            return None
        return Inventory(networks=networks, source="seismoflow tests.fdsnws")

    def _station(
        self, network: str, sta: Station, sels: list[Selection], values: dict[str, Any]
    ) -> Station | None:
        if not sels or not _geometry_ok(sta, values):
            return None
        sels = [s for s in sels if s.match(1, sta.code) and _epoch_ok(sta, values, s)]
        if not sels:
            return None
        match_data = values["matchtimeseries"] and self.has_data is not None

        def wanted(c: Channel, s: Selection) -> bool:
            if not (s.match(2, c.location_code) and s.match(3, c.code)):
                return False
            if not _epoch_ok(c, values, s):
                return False
            nslc = (network, sta.code, c.location_code, c.code)
            return not match_data or bool(self.has_data and self.has_data(nslc, s))

        channels: list[Channel] = [c for c in sta.channels if any(wanted(c, s) for s in sels)]
        if not channels and (match_data or all(s.constrains_channels for s in sels)):
            return None
        out = copy.copy(sta)
        level = _LEVELS.index(values["level"])
        if level < 2:
            out.channels = []
        elif level == 2:
            out.channels = [copy.copy(c) for c in channels]
            for c in out.channels:
                c.response = None
        else:
            out.channels = channels
        return out


def renamed(inv: Inventory, names: dict[str, str]) -> Inventory:
    """A copy of ``inv`` whose stations in ``names`` carry the new (hostile) code."""
    networks = []
    for net in inv.networks:
        out = copy.copy(net)
        out.stations = []
        for sta in net.stations:
            if sta.code in names:
                sta = copy.copy(sta)
                sta.code = names[sta.code]
            out.stations.append(sta)
        networks.append(out)
    return Inventory(networks=networks, source=inv.source)


def _time(t: UTCDateTime | None) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S") if t is not None else ""


def _num(x: Any) -> str:
    return "" if x is None else str(x)


def to_text(inv: Inventory, level: str) -> bytes:
    """The FDSN text format (``format=text``) at ``network``, ``station`` or ``channel`` level."""
    lines: list[str] = []
    if level == "network":
        lines.append("#Network|Description|StartTime|EndTime|TotalStations")
        for n in inv:
            row = [n.code, n.description or "", _time(n.start_date), _time(n.end_date)]
            lines.append("|".join([*row, str(len(n.stations))]))
    elif level == "station":
        lines.append("#Network|Station|Latitude|Longitude|Elevation|SiteName|StartTime|EndTime")
        for n in inv:
            for s in n:
                row = [n.code, s.code, _num(s.latitude), _num(s.longitude), _num(s.elevation)]
                lines.append("|".join([*row, s.site.name or "", _time(s.start_date),
                                       _time(s.end_date)]))  # fmt: skip
    else:
        lines.append(
            "#Network|Station|Location|Channel|Latitude|Longitude|Elevation|Depth|Azimuth|Dip"
            "|SensorDescription|Scale|ScaleFreq|ScaleUnits|SampleRate|StartTime|EndTime"
        )
        for n in inv:
            for s in n:
                for c in s:
                    sens = c.response.instrument_sensitivity if c.response else None
                    sensor = (c.sensor.description or c.sensor.type or "") if c.sensor else ""
                    row = [
                        n.code, s.code, c.location_code, c.code, _num(c.latitude),
                        _num(c.longitude), _num(c.elevation), _num(c.depth), _num(c.azimuth),
                        _num(c.dip), sensor, _num(sens.value if sens else None),
                        _num(sens.frequency if sens else None),
                        (sens.input_units or "") if sens else "", _num(c.sample_rate),
                        _time(c.start_date), _time(c.end_date),
                    ]  # fmt: skip
                    lines.append("|".join(row))
    return ("\n".join(lines) + "\n").encode()


def to_bytes(inv: Inventory, values: dict[str, Any]) -> tuple[bytes, str]:
    """The answer body and its content type, by ``format``."""
    if values["format"] == "text":
        return to_text(inv, "channel" if values["level"] == "response" else values["level"]), (
            "text/plain"
        )
    buf = io.BytesIO()
    inv.write(buf, format="STATIONXML")
    return buf.getvalue(), "application/xml"
