"""SEED / FDSN source identifiers, validated before they name anything in the store.

Codes follow the FDSN Source Identifiers rules: network 1-8 and station 1-8 characters,
location 0-8 characters, uppercase ASCII letters, digits (and dash for station and
location); channel either a SEED 2.4 three-character code or the FDSN ``BAND_SOURCE_SUBSOURCE``
form. Anything else (``../x``, a slash, a space, lowercase) is rejected with a reason and the
caller quarantines the input: an invalid code never becomes a path or a group name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from seismoflow.errors import BadInputError

_NETWORK = re.compile(r"[A-Z0-9]{1,8}")
_STATION = re.compile(r"[A-Z0-9](?:[A-Z0-9-]{0,7})")
_LOCATION = re.compile(r"(?:[A-Z0-9-]{0,8})")
_CHANNEL = re.compile(r"[A-Z0-9]{3}|[A-Z0-9]{1,3}_[A-Z0-9]{1,3}_[A-Z0-9]{1,3}")
# QuakeML 1.2 ResourceReference (smi:authority/local-id); used as a value, never a path.
_RESOURCE_ID = re.compile(r"(smi|quakeml):[\w\-.*()~']{2,}/[\w\-.*()+?~'=,;#/&]+")


class InvalidCodeError(BadInputError):
    """A network/station/location/channel code or event id that breaks the FDSN rules."""


def _check(kind: str, value: str, pattern: re.Pattern[str], rule: str) -> str:
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise InvalidCodeError(f"invalid {kind} code {value!r}: {rule}")
    return value


def normalize_location(location: str) -> str:
    """SEED uses ``--`` or blanks for an empty location code; the store uses ``''``."""
    loc = location.strip()
    return "" if loc == "--" else loc


@dataclass(frozen=True, order=True)
class ChannelId:
    """One SEED channel: ``NET.STA.LOC.CHA`` (location may be empty)."""

    network: str
    station: str
    location: str
    channel: str

    def __post_init__(self) -> None:
        _check("network", self.network, _NETWORK, "1-8 characters A-Z 0-9")
        _check("station", self.station, _STATION, "1-8 characters A-Z 0-9 -")
        _check("location", self.location, _LOCATION, "0-8 characters A-Z 0-9 - (empty allowed)")
        _check("channel", self.channel, _CHANNEL, "3 characters A-Z 0-9, or BAND_SOURCE_SUBSOURCE")

    @classmethod
    def parse(cls, nslc: str) -> ChannelId:
        """Parse ``NET.STA.LOC.CHA``; raises :class:`InvalidCodeError` with the input named."""
        parts = nslc.split(".")
        if len(parts) != 4:
            raise InvalidCodeError(f"invalid channel id {nslc!r}: expected NET.STA.LOC.CHA")
        net, sta, loc, cha = parts
        return cls(net, sta, normalize_location(loc), cha)

    @property
    def nslc(self) -> str:
        return f"{self.network}.{self.station}.{self.location}.{self.channel}"

    @property
    def station_id(self) -> str:
        return f"{self.network}.{self.station}"

    @property
    def component(self) -> str:
        """Orientation code: the last character of the channel code."""
        return self.channel[-1]

    @property
    def channel_set(self) -> str:
        """Band + instrument codes with a wildcard component, e.g. ``HH?``."""
        return self.channel[:-1] + "?"

    def __str__(self) -> str:
        return self.nslc


def validate_event_id(event_id: str) -> str:
    """Check a QuakeML resource id (``smi:authority/local-id``); return it unchanged."""
    return _check("event id", event_id, _RESOURCE_ID, "a QuakeML resource id smi:authority/id")
