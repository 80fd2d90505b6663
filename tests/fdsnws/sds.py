"""An SDS archive answered record by record: the original miniSEED records, never re-encoded.

Day files are indexed by name at start-up; a file's record headers (start, end) are read
on first use and cached. An answer is the whole records that overlap the requested windows,
as real data centres return them.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from obspy.io.mseed.util import get_record_information

from tests.fdsnws.params import Selection

Nslc = tuple[str, str, str, str]


@dataclass(frozen=True)
class Record:
    """One miniSEED record of a day file: byte range and sample times (ns since 1970, UTC)."""

    offset: int
    length: int
    start_ns: int
    end_ns: int  # time of the record's last sample


class SDSArchive:
    """Day files of ``root`` (``YEAR/NET/STA/CHA.D/NET.STA.LOC.CHA.D.YEAR.DOY``) by channel."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[Nslc, dict[dt.date, Path]] = {}
        for path in root.glob("*/*/*/*.D/*.D.*"):
            parts = path.name.split(".")
            if len(parts) != 7 or not (parts[5].isdigit() and parts[6].isdigit()):
                continue
            day = dt.date(int(parts[5]), 1, 1) + dt.timedelta(days=int(parts[6]) - 1)
            self.files.setdefault((parts[0], parts[1], parts[2], parts[3]), {})[day] = path
        # Channels by (network, station), upper case: a request line naming both without
        # wildcards (as bulk requests do) looks them up instead of matching every channel.
        self._by_station: dict[tuple[str, str], list[Nslc]] = {}
        for nslc in self.files:
            self._by_station.setdefault((nslc[0].upper(), nslc[1].upper()), []).append(nslc)
        self._records: dict[Path, list[Record]] = {}
        self._lock = threading.Lock()

    def records(self, path: Path) -> list[Record]:
        """The records of one day file, read from their headers once."""
        with self._lock:
            cached = self._records.get(path)
        if cached is not None:
            return cached
        records = []
        size = path.stat().st_size
        with open(path, "rb") as fh:
            offset = 0
            while offset < size:
                info = get_record_information(fh, offset)
                length = int(info["record_length"])
                start, end = info["starttime"], info["endtime"]
                records.append(Record(offset, length, start.ns, end.ns))
                offset += length
        with self._lock:
            self._records[path] = records
        return records

    def channels(self, selection: Selection, exclude_networks: Iterable[str] = ()) -> list[Nslc]:
        excluded = set(exclude_networks)
        net, sta = selection.network.upper(), selection.station.upper()
        literal = not any(c in code for code in (net, sta) for c in "*?,")
        candidates = self._by_station.get((net, sta), []) if literal else self.files
        return sorted(
            nslc
            for nslc in candidates
            if nslc[0] not in excluded and all(selection.match(i, c) for i, c in enumerate(nslc))
        )

    def has_data(self, nslc: Nslc, selection: Selection) -> bool:
        """Whether a day file of ``nslc`` overlaps the selection's window (day resolution)."""
        days = self.files.get(nslc, {})
        first = (selection.starttime - 86400).date if selection.starttime is not None else None
        last = selection.endtime.date if selection.endtime is not None else None
        return any(
            (first is None or day >= first) and (last is None or day <= last) for day in days
        )

    def select(
        self, selections: Iterable[Selection], exclude_networks: Iterable[str] = ()
    ) -> list[tuple[Path, Record]]:
        """Records overlapping any selection, each once, in request order then time order."""
        chosen: dict[tuple[Path, int], tuple[Path, Record]] = {}
        for sel in selections:
            t0 = sel.starttime.ns if sel.starttime is not None else None
            t1 = sel.endtime.ns if sel.endtime is not None else None
            # The day before the window too: a record may run past midnight.
            first = (sel.starttime - 86400).date if sel.starttime is not None else None
            last = sel.endtime.date if sel.endtime is not None else None
            for nslc in self.channels(sel, exclude_networks):
                for day, path in sorted(self.files[nslc].items()):
                    if (first is not None and day < first) or (last is not None and day > last):
                        continue
                    for rec in self.records(path):
                        if (t1 is None or rec.start_ns <= t1) and (t0 is None or rec.end_ns >= t0):
                            chosen.setdefault((path, rec.offset), (path, rec))
        return list(chosen.values())

    @staticmethod
    def read(records: list[tuple[Path, Record]]) -> bytes:
        """The bytes of ``records``, copied from their files unchanged."""
        out = bytearray()
        for path, group in itertools.groupby(records, key=lambda pr: pr[0]):
            with open(path, "rb") as fh:
                for _, rec in group:
                    fh.seek(rec.offset)
                    out += fh.read(rec.length)
        return bytes(out)
