"""Query parameters of the three FDSN services: one table drives parsing and the WADL.

Parameter names, aliases and defaults follow the FDSN web service specification 1.2.
Values are converted once here; the service modules receive typed values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from obspy import UTCDateTime


class BadRequest(ValueError):
    """A request the service refuses with HTTP 400; the message names the cause."""


@dataclass(frozen=True)
class Param:
    """One query parameter: canonical name, value kind, short aliases, WADL default."""

    name: str
    kind: str  # "time", "str", "float", "int" or "bool"
    aliases: tuple[str, ...] = ()
    default: str | None = None
    options: tuple[str, ...] = ()


_CODES = (
    Param("network", "str", ("net",)),
    Param("station", "str", ("sta",)),
    Param("location", "str", ("loc",)),
    Param("channel", "str", ("cha",)),
)
_TIME = (Param("starttime", "time", ("start",)), Param("endtime", "time", ("end",)))
_BOX = (
    Param("minlatitude", "float", ("minlat",), "-90.0"),
    Param("maxlatitude", "float", ("maxlat",), "90.0"),
    Param("minlongitude", "float", ("minlon",), "-180.0"),
    Param("maxlongitude", "float", ("maxlon",), "180.0"),
    Param("latitude", "float", ("lat",)),
    Param("longitude", "float", ("lon",)),
    Param("minradius", "float", (), "0.0"),
    Param("maxradius", "float", (), "180.0"),
)
_NODATA = Param("nodata", "int", (), "204", ("204", "404"))

PARAMS: dict[str, tuple[Param, ...]] = {
    "dataselect": (
        *_TIME,
        *_CODES,
        Param("quality", "str", (), "B", ("D", "R", "Q", "M", "B")),
        Param("minimumlength", "float", (), "0.0"),
        Param("longestonly", "bool", (), "false"),
        Param("format", "str", (), "miniseed", ("miniseed",)),
        _NODATA,
    ),
    "station": (
        *_TIME,
        Param("startbefore", "time"),
        Param("startafter", "time"),
        Param("endbefore", "time"),
        Param("endafter", "time"),
        *_CODES,
        *_BOX,
        Param("level", "str", (), "station", ("network", "station", "channel", "response")),
        Param("includerestricted", "bool", (), "true"),
        Param("includeavailability", "bool", (), "false"),
        Param("updatedafter", "time"),
        Param("matchtimeseries", "bool", (), "false"),
        Param("format", "str", (), "xml", ("xml", "text")),
        _NODATA,
    ),
    "event": (
        *_TIME,
        *_BOX,
        Param("mindepth", "float"),
        Param("maxdepth", "float"),
        Param("minmagnitude", "float", ("minmag",)),
        Param("maxmagnitude", "float", ("maxmag",)),
        Param("magnitudetype", "str", ("magtype",)),
        Param("eventtype", "str"),
        Param("includeallorigins", "bool", (), "false"),
        Param("includeallmagnitudes", "bool", (), "false"),
        Param("includearrivals", "bool", (), "false"),
        Param("eventid", "str"),
        Param("limit", "int"),
        Param("offset", "int", (), "1"),
        Param("orderby", "str", (), "time", ("time", "time-asc", "magnitude", "magnitude-asc")),
        Param("catalog", "str"),
        Param("contributor", "str"),
        Param("updatedafter", "time"),
        Param("format", "str", (), "xml", ("xml",)),
        _NODATA,
    ),
}


def _convert(param: Param, raw: str) -> Any:
    try:
        if param.kind == "time":
            return UTCDateTime(raw)
        if param.kind == "float":
            return float(raw)
        if param.kind == "int":
            return int(raw)
    except Exception as exc:
        raise BadRequest(f"invalid value {raw!r} for parameter {param.name!r}") from exc
    if param.kind == "bool":
        if raw.lower() not in ("true", "false"):
            raise BadRequest(f"invalid value {raw!r} for parameter {param.name!r}")
        return raw.lower() == "true"
    if param.options and raw.lower() not in [o.lower() for o in param.options]:
        raise BadRequest(f"invalid value {raw!r} for parameter {param.name!r}")
    return raw.lower() if param.options else raw


def parse_params(service: str, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Typed values by canonical name; unknown or repeated parameters are a 400."""
    by_name = {a: p for p in PARAMS[service] for a in (p.name, *p.aliases)}
    values: dict[str, Any] = {}
    for key, raw in pairs:
        param = by_name.get(key.lower())
        if param is None:
            raise BadRequest(f"unknown parameter {key!r} for the {service} service")
        if param.name in values:
            raise BadRequest(f"parameter {param.name!r} given more than once")
        values[param.name] = _convert(param, raw.strip())
    for param in PARAMS[service]:
        if param.default is not None and param.name not in values:
            values[param.name] = _convert(param, param.default)
    return values


def _code_regex(value: str, location: bool) -> re.Pattern[str]:
    parts = []
    for item in value.upper().split(","):
        item = item.strip()
        if location and item in ("--", ""):
            item = ""
        parts.append(re.escape(item).replace(r"\*", ".*").replace(r"\?", "."))
    return re.compile("|".join(f"(?:{p})" for p in parts))


@dataclass(frozen=True)
class Selection:
    """SEED codes (comma lists, ``?``/``*`` wildcards, ``--`` = empty location) and a window."""

    network: str = "*"
    station: str = "*"
    location: str = "*"
    channel: str = "*"
    starttime: UTCDateTime | None = None
    endtime: UTCDateTime | None = None
    _re: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        codes = (self.network, self.station, self.location, self.channel)
        regexes = tuple(_code_regex(c, i == 2) for i, c in enumerate(codes))
        object.__setattr__(self, "_re", regexes)

    def match(self, level: int, code: str) -> bool:
        """Whether ``code`` matches at ``level`` (0 network, 1 station, 2 location, 3 channel)."""
        return self._re[level].fullmatch(code.upper()) is not None

    @property
    def constrains_channels(self) -> bool:
        return (self.location, self.channel) != ("*", "*")

    def overlaps(self, start: UTCDateTime | None, end: UTCDateTime | None) -> bool:
        """Whether the epoch ``[start, end]`` (None = open) overlaps this selection's window."""
        if self.starttime is not None and end is not None and end < self.starttime:
            return False
        return not (self.endtime is not None and start is not None and start > self.endtime)


def selection_from(values: dict[str, Any]) -> Selection:
    """The one selection of a GET query; an empty ``location=`` means the empty location."""
    names = ("network", "station", "location", "channel")
    codes = {k: values.get(k) or ("--" if k == "location" and values.get(k) == "" else "*")
             for k in names}  # fmt: skip
    return Selection(**codes, starttime=values.get("starttime"), endtime=values.get("endtime"))


def parse_post(service: str, body: bytes) -> tuple[dict[str, Any], list[Selection]]:
    """A POST body: ``key=value`` lines, then ``NET STA LOC CHA START END`` lines."""
    pairs: list[tuple[str, str]] = []
    selections: list[Selection] = []
    for number, line in enumerate(body.decode("utf-8", "replace").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" in line and not selections:
            key, _, value = line.partition("=")
            pairs.append((key.strip(), value.strip()))
            continue
        fields = line.split()
        if len(fields) != 6:
            raise BadRequest(f"line {number} of the POST body is not 'NET STA LOC CHA START END'")
        start, end = (None if f == "*" else _convert(_TIME[0], f) for f in fields[4:])
        net, sta, loc, cha = fields[:4]
        selections.append(Selection(net, sta, loc, cha, starttime=start, endtime=end))
    if not selections:
        raise BadRequest("the POST body holds no 'NET STA LOC CHA START END' line")
    return parse_params(service, pairs), selections
