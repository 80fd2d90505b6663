"""What the service answers, independent of HTTP: routes, queries, auth, discovery."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import obspy

from tests.fdsnws import events, hostile, stations
from tests.fdsnws.auth import DigestAuth
from tests.fdsnws.faults import Faults
from tests.fdsnws.params import BadRequest, Selection, parse_params, parse_post, selection_from
from tests.fdsnws.sds import SDSArchive
from tests.fdsnws.wadl import VERSIONS, simple_list, wadl

SERVICES = ("dataselect", "station", "event")
DATA_RESOURCES = ("query", "queryauth", "auth")


@dataclass(frozen=True)
class Request:
    """One HTTP request as the service sees it; ``uri`` is the request target (path?query)."""

    method: str
    service: str
    resource: str
    uri: str
    query: str
    body: bytes
    authorization: str | None
    base_url: str


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    fault: str | None = None


def error(status: int, message: str, **headers: str) -> Response:
    """An FDSN-style error document (spec section "Error reporting")."""
    titles = {
        400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
        413: "Request Entity Too Large", 429: "Too Many Requests",
        500: "Internal Server Error", 503: "Service Unavailable",
    }  # fmt: skip
    body = f"Error {status}: {titles.get(status, '')}\n\n{message}\n\nService: tests.fdsnws\n"
    return Response(status, body.encode(), headers=headers)


def retry_later(status: int, faults: Faults) -> Response:
    """A 503 or 429 with ``Retry-After`` in whole seconds (rounded up)."""
    seconds = str(max(0, math.ceil(faults.retry_after)))
    return error(status, "injected fault: try again later", **{"Retry-After": seconds})


def route(path: str) -> tuple[str, str] | None:
    """``/fdsnws/SERVICE/1/RESOURCE`` -> (service, resource)."""
    parts = path.split("/")
    if len(parts) != 5 or parts[:2] != ["", "fdsnws"] or parts[2] not in SERVICES:
        return None
    if parts[3] != "1":
        return None
    return parts[2], parts[4]


class Archive:
    """The parsed root folder: ``sds/``, ``stations.xml[.gz]``, ``events.xml`` (each optional)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sds = SDSArchive(root / "sds") if (root / "sds").is_dir() else None
        station_file = next(
            (root / n for n in ("stations.xml", "stations.xml.gz") if (root / n).is_file()), None
        )
        self.stations = (
            stations.StationService(
                obspy.read_inventory(str(station_file), format="STATIONXML"),
                self.sds.has_data if self.sds else None,
            )
            if station_file
            else None
        )
        event_file = root / "events.xml"
        self.events = (
            events.EventService(obspy.read_events(str(event_file), format="QUAKEML"))
            if event_file.is_file()
            else None
        )
        if not (self.sds or self.stations or self.events):
            raise FileNotFoundError(f"{root} holds no sds/, stations.xml[.gz] or events.xml")

    def offers(self, service: str) -> bool:
        held = {"dataselect": self.sds, "station": self.stations, "event": self.events}
        return held[service] is not None

    def answer(self, req: Request, faults: Faults, auth: DigestAuth) -> Response:
        """The answer to one request (faults that act on the connection are applied outside)."""
        method, service, resource, body = req.method, req.service, req.resource, req.body
        if not self.offers(service):
            return error(404, f"the {service} service is not offered here")
        if resource == "version" and method == "GET":
            return Response(200, VERSIONS[service].encode())
        if resource == "application.wadl" and method == "GET":
            return Response(200, wadl(req.base_url, service), "application/xml")
        if service == "event" and resource in ("catalogs", "contributors") and method == "GET":
            assert self.events is not None
            items = getattr(self.events, resource)
            return Response(200, simple_list(resource[:-1].capitalize(), items), "application/xml")
        if service == "dataselect" and resource == "auth" and method == "POST":
            if faults.token is not None and body.decode(errors="replace").strip() == faults.token:
                return Response(200, f"{faults.user}:{faults.password}".encode())
            return error(403, "token not accepted")
        if faults.redirect and service == "dataselect" and resource in ("query", "queryauth"):
            target = faults.redirect.rstrip("/") + req.uri
            response = error(307, f"moved to {target}", Location=target)
            response.fault = "redirect"
            return response
        authorized = False
        if service == "dataselect" and resource == "queryauth":
            if not auth.verify(req.authorization, method, req.uri, faults.user, faults.password):
                return error(401, "authentication required", **{
                    "WWW-Authenticate": auth.challenge()})  # fmt: skip
            authorized = True
        elif resource != "query":
            return error(404, f"no resource {resource!r} in the {service} service")
        try:
            if method == "POST":
                values, selections = parse_post(service, body)
            else:
                values = parse_params(service, parse_qsl(req.query, keep_blank_values=True))
                selections = [selection_from(values)]
            if service == "dataselect":
                return self._dataselect(method, values, selections, authorized, faults)
            if service == "station":
                return self._station(values, selections, faults)
            return self._event(values)
        except BadRequest as exc:
            return error(400, str(exc))

    @staticmethod
    def _nodata(values: dict[str, Any]) -> Response:
        if values["nodata"] == 404:
            return error(404, "no data matches the request")
        return Response(204)

    def _dataselect(
        self,
        method: str,
        values: dict[str, Any],
        selections: list[Selection],
        authorized: bool,
        faults: Faults,
    ) -> Response:
        assert self.sds is not None
        if values["minimumlength"] != 0.0:
            raise BadRequest("parameter 'minimumlength' is not supported by this service")
        if values["longestonly"]:
            raise BadRequest("parameter 'longestonly' is not supported by this service")
        if method == "GET" and (values.get("starttime") is None or values.get("endtime") is None):
            raise BadRequest("parameters 'starttime' and 'endtime' are required")
        limit = faults.max_bulk_lines
        if method == "POST" and limit is not None and len(selections) > limit:
            response = error(413, f"{len(selections)} request lines; at most {limit} accepted")
            response.fault = "too_large"
            return response
        hidden = () if authorized else faults.restricted
        real = {new: old for old, new in faults.hostile_stations}
        if real:  # a renamed station is asked for by its new code: answer the real one's data
            selections = [dataclasses.replace(s, station=real.get(s.station, s.station))
                          for s in selections]  # fmt: skip
        records = self.sds.select(selections, hidden)
        if not records:
            return self._nodata(values)
        body = SDSArchive.read(records)
        if real:
            names = dict(faults.hostile_stations)
            body = hostile.rename_records(body, [r.length for _, r in records], names)
        response = Response(200, body, "application/vnd.fdsn.mseed")
        kind = faults.hostile_answer()
        if kind and (not faults.targets or any(s.station in faults.targets for s in selections)):
            response.fault = kind
        return response

    def _station(
        self, values: dict[str, Any], selections: list[Selection], faults: Faults
    ) -> Response:
        assert self.stations is not None
        if faults.hostile_stations:  # asked for by a renamed code: look up the real one
            real = {new: old for old, new in faults.hostile_stations}
            selections = [dataclasses.replace(s, station=real.get(s.station, s.station))
                          for s in selections]  # fmt: skip
        inv = self.stations.query(values, selections, faults.restricted)
        if inv is None:
            return self._nodata(values)
        if faults.hostile_stations:
            inv = stations.renamed(inv, dict(faults.hostile_stations))
        body, content_type = stations.to_bytes(inv, values)
        return Response(200, body, content_type)

    def _event(self, values: dict[str, Any]) -> Response:
        assert self.events is not None
        catalog = self.events.query(values)
        if catalog is None:
            return self._nodata(values)
        return Response(200, events.to_bytes(catalog), "application/xml")
