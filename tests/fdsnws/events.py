"""fdsnws-event/1 over one parsed Catalog.

Filters use each event's preferred origin and magnitude (else the first). As real services
do, an event lacking the filtered quantity (magnitude, depth, type) is excluded when that
filter is given. The catalog of an event is the second part of its resource id
(``smi:local/pnsn/...`` -> ``pnsn``); its contributor is the origin's agency, else the catalog.
"""

from __future__ import annotations

import fnmatch
import io
from dataclasses import dataclass
from typing import Any

from obspy import Catalog, UTCDateTime
from obspy.core.event import Event
from obspy.geodetics import locations2degrees

from tests.fdsnws.params import BadRequest


@dataclass(frozen=True)
class _Row:
    event: Event
    event_id: str
    time: UTCDateTime | None
    latitude: float | None
    longitude: float | None
    depth_km: float | None
    magnitude: float | None
    magnitude_type: str | None
    event_type: str | None
    catalog: str
    contributor: str


def _row(event: Event) -> _Row:
    origin = event.preferred_origin() or (event.origins[0] if event.origins else None)
    mag = event.preferred_magnitude() or (event.magnitudes[0] if event.magnitudes else None)
    event_id = str(event.resource_id)
    parts = event_id.split("/")
    catalog = parts[1] if len(parts) > 2 else "default"
    agency = origin.creation_info.agency_id if origin and origin.creation_info else None
    return _Row(
        event=event,
        event_id=event_id,
        time=origin.time if origin else None,
        latitude=origin.latitude if origin else None,
        longitude=origin.longitude if origin else None,
        depth_km=origin.depth / 1000.0 if origin and origin.depth is not None else None,
        magnitude=mag.mag if mag else None,
        magnitude_type=mag.magnitude_type if mag else None,
        event_type=str(event.event_type) if event.event_type is not None else None,
        catalog=catalog,
        contributor=agency or catalog,
    )


def _between(x: float | UTCDateTime | None, lo: Any, hi: Any) -> bool:
    if lo is None and hi is None:
        return True
    if x is None:
        return False
    return (lo is None or x >= lo) and (hi is None or x <= hi)


class EventService:
    """Answers event queries from ``catalog``."""

    def __init__(self, catalog: Catalog) -> None:
        self.rows = [_row(e) for e in catalog]

    @property
    def catalogs(self) -> list[str]:
        return sorted({r.catalog for r in self.rows})

    @property
    def contributors(self) -> list[str]:
        return sorted({r.contributor for r in self.rows})

    def _keep(self, r: _Row, v: dict[str, Any]) -> bool:
        if not _between(r.time, v.get("starttime"), v.get("endtime")):
            return False
        if not _between(r.depth_km, v.get("mindepth"), v.get("maxdepth")):
            return False
        if not _between(r.magnitude, v.get("minmagnitude"), v.get("maxmagnitude")):
            return False
        if (t := v.get("magnitudetype")) and (r.magnitude_type or "").lower() != t.lower():
            return False
        if (ids := v.get("eventid")) and not any(
            r.event_id == i or r.event_id.endswith("/" + i) for i in ids.split(",")
        ):
            return False
        if (c := v.get("catalog")) and r.catalog not in c.split(","):
            return False
        if (c := v.get("contributor")) and r.contributor not in c.split(","):
            return False
        if types := v.get("eventtype"):
            patterns = [p.strip().lower() for p in types.split(",")]
            if r.event_type is None or not any(
                fnmatch.fnmatchcase(r.event_type.lower(), p) for p in patterns
            ):
                return False
        box = (v["minlatitude"], v["maxlatitude"], v["minlongitude"], v["maxlongitude"])
        if box != (-90.0, 90.0, -180.0, 180.0) and not (
            _between(r.latitude, box[0], box[1]) and _between(r.longitude, box[2], box[3])
        ):
            return False
        if v.get("latitude") is not None or v.get("longitude") is not None:
            if r.latitude is None or r.longitude is None:
                return False
            lat, lon = v.get("latitude", 0.0), v.get("longitude", 0.0)
            dist = locations2degrees(lat, lon, r.latitude, r.longitude)
            return bool(v["minradius"] <= dist <= v["maxradius"])
        return True

    def query(self, values: dict[str, Any]) -> Catalog | None:
        """Matching events ordered and paged as asked; None when nothing matches."""
        rows = [r for r in self.rows if self._keep(r, values)]
        order = values["orderby"]
        if order.startswith("time"):
            rows.sort(key=lambda r: r.time or UTCDateTime(0), reverse=order == "time")
        else:
            rows.sort(key=lambda r: -1e9 if r.magnitude is None else r.magnitude,
                      reverse=order == "magnitude")  # fmt: skip
        if values["offset"] < 1:
            raise BadRequest("parameter 'offset' starts at 1")
        rows = rows[values["offset"] - 1 :]
        if (limit := values.get("limit")) is not None:
            rows = rows[:limit]
        if not rows:
            return None
        return Catalog(events=[r.event for r in rows], resource_id="smi:local/tests.fdsnws")


def to_bytes(catalog: Catalog) -> bytes:
    buf = io.BytesIO()
    catalog.write(buf, format="QUAKEML")
    return buf.getvalue()
