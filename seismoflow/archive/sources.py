"""Finding and decoding waveform source files: SDS archives and folders of miniSEED/SAC.

Nothing here raises on bad input: every problem comes back as a :class:`Problem` with the
file named and what to do, so the caller can quarantine it and go on.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import obspy
from obspy.io.mseed.util import get_record_information

from seismoflow.archive.records import (
    FUTURE_SLACK_NS,
    SDS_NAME,
    BadRecord,
    decode_by_record,
    read_mseed_bytes,
    sds_day,
    sds_span,
    stream_is_possible,
)
from seismoflow.ids import ChannelId, InvalidCodeError, normalize_location
from seismoflow.times import NS_PER_DAY, day_start_ns, to_ns

_SAC_SUFFIXES = {".sac", ".SAC"}
_DECODE_LOCK = threading.Lock()


@dataclass(frozen=True)
class Problem:
    """One piece of bad input: where it is, what is wrong, and how much of it."""

    source: str
    reason: str
    channel: str = ""
    start_ns: int | None = None
    end_ns: int | None = None
    npts: int = 0
    byte_offset: int | None = None  # where in the file the bad piece starts (miniSEED)

    def as_record(self) -> dict[str, object]:
        return {
            "source": self.source,
            "reason": self.reason,
            "channel": self.channel,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "npts": self.npts,
            "byte_offset": self.byte_offset,
        }


@dataclass(frozen=True)
class SourceFile:
    """A waveform file and the channel-days it covers (from headers or its SDS name)."""

    path: str
    channel: ChannelId
    start_ns: int
    end_ns: int
    size: int
    mtime_ns: int
    named_channel: bool = False  # the channel comes from the file's SDS name

    @property
    def first_day_ns(self) -> int:
        return day_start_ns(self.start_ns)

    def days(self, start_ns: int | None = None, end_ns: int | None = None) -> list[int]:
        """Start (ns) of each day the file covers, within ``[start_ns, end_ns)`` if given."""
        first = self.first_day_ns
        last = day_start_ns(self.end_ns)
        if start_ns is not None:
            first = max(first, day_start_ns(start_ns))
        if end_ns is not None:
            last = min(last, day_start_ns(end_ns - 1))
        return list(range(first, last + 1, NS_PER_DAY))

    def fingerprint(self) -> dict[str, object]:
        """What identifies this version of the file: a changed file is read again."""
        return {"path": self.path, "size": self.size, "mtime_ns": self.mtime_ns}


@dataclass
class Segment:
    """A contiguous run of samples from one source (counts, exact start)."""

    channel: ChannelId
    start_ns: int
    sampling_rate: float
    data: np.ndarray
    source: str

    @property
    def npts(self) -> int:
        return int(self.data.size)


@dataclass
class ScanResult:
    files: list[SourceFile] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)  # files skipped: name starts with '.'


def _iter_files(root: Path, hidden: list[str]) -> Iterator[Path]:
    """Every file under ``root`` in name order; hidden ones are appended to ``hidden``."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.startswith("."):
                hidden.append(str(Path(dirpath) / name))
            else:
                yield Path(dirpath) / name


def _channel_from_codes(net: str, sta: str, loc: str, cha: str) -> ChannelId:
    return ChannelId(net, sta, normalize_location(loc), cha)


def scan(root: Path, start_ns: int | None = None, end_ns: int | None = None) -> ScanResult:
    """Index every waveform file under ``root`` (an SDS tree or any folder of files).

    SDS day files are indexed from their names plus the first/last record (cheap); other
    files from their headers. Files wholly outside ``[start_ns, end_ns)`` are left out.
    """
    result = ScanResult()
    if not root.is_dir():
        result.problems.append(Problem(str(root), "waveform folder does not exist; check --sds"))
        return result
    for path in _iter_files(root, result.hidden):
        stat = path.stat()
        match = SDS_NAME.match(path.name)
        try:
            if match and match["type"] == "D":
                entries = [_sds_entry(path, match, stat)]
            else:
                entries = _header_entries(path, stat)
        except InvalidCodeError as exc:
            result.problems.append(Problem(str(path), f"{exc}; file not ingested"))
            continue
        except Exception as exc:  # noqa: BLE001 - any unreadable file is quarantined
            result.problems.append(
                Problem(str(path), f"unreadable waveform file ({exc}); file not ingested")
            )
            continue
        for entry in entries:
            if start_ns is not None and entry.end_ns < start_ns:
                continue
            if end_ns is not None and entry.start_ns >= end_ns:
                continue
            result.files.append(entry)
    return result


def _sds_entry(path: Path, match: re.Match[str], stat: os.stat_result) -> SourceFile:
    parts = match["nslc"].split(".")
    if len(parts) != 4:
        raise InvalidCodeError(f"SDS name {path.name!r} is not NET.STA.LOC.CHA.D.YEAR.DOY")
    channel = _channel_from_codes(*parts)
    day = sds_day(path)
    if day is None:
        raise InvalidCodeError(f"SDS name {path.name!r} has no day of year 001..366")
    start, end = day, day + NS_PER_DAY - 1
    # The records' real span: it sizes the unit's coverage (codec choice), and a record
    # running past midnight makes the file part of the next day's unit too. Bounded by the
    # file's day, whatever the headers claim. A damaged file is decoded (and reported) by
    # its unit.
    with contextlib.suppress(Exception):
        start, end = sds_span(path, day, stat.st_size)
    return SourceFile(str(path), channel, start, end, stat.st_size, stat.st_mtime_ns, True)


def _header_entries(path: Path, stat: os.stat_result) -> list[SourceFile]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st = obspy.read(str(path), headonly=True)
    spans: dict[ChannelId, tuple[int, int]] = {}
    latest = time.time_ns() + FUTURE_SLACK_NS
    for tr in st:
        s = tr.stats
        ch = _channel_from_codes(s.network, s.station, s.location, s.channel)
        t0, t1 = to_ns(s.starttime), to_ns(s.endtime)
        if not 0 <= t0 <= t1 <= latest:
            continue  # an impossible time plans nothing; decoding reports the record
        lo, hi = spans.get(ch, (t0, t1))
        spans[ch] = (min(lo, t0), max(hi, t1))
    return [
        SourceFile(str(path), ch, lo, hi, stat.st_size, stat.st_mtime_ns)
        for ch, (lo, hi) in sorted(spans.items())
    ]


def _as_counts(tr: obspy.Trace, source: str) -> tuple[np.ndarray | None, str]:
    """Samples as int32 counts, or ``None`` and the reason they cannot be stored losslessly."""
    data = tr.data
    if np.issubdtype(data.dtype, np.integer):
        if data.dtype.itemsize > 4 and (np.abs(data) > np.iinfo(np.int32).max).any():
            return None, "samples exceed int32 counts"
        return data.astype(np.int32, copy=False), ""
    if np.issubdtype(data.dtype, np.floating):
        finite = np.isfinite(data).all()
        if (
            finite
            and np.array_equal(data, np.round(data))
            and (np.abs(data) <= np.iinfo(np.int32).max).all()
        ):
            return data.astype(np.int32), ""
        return None, (
            "floating-point samples that are not integer counts; seismoflow stores raw "
            "counts losslessly: ingest the raw (uncorrected) data"
        )
    return None, f"unsupported sample type {data.dtype}"


def _decode_mseed(path: str) -> tuple[obspy.Stream, list[Problem]]:
    """Decode a miniSEED file whole, or record by record when the whole read fails or yields
    an impossible header: then each bad record is reported alone, with its byte offset.
    """
    problems: list[Problem] = []
    bad: list[BadRecord] = []
    info = get_record_information(path)
    reclen = int(info["record_length"])
    raw = Path(path).read_bytes()
    excess = len(raw) % reclen
    if excess:
        problems.append(
            Problem(
                path,
                f"truncated miniSEED: the last {excess} bytes (from byte {len(raw) - excess}) "
                f"are not a whole {reclen}-byte record; the complete records were ingested",
                byte_offset=len(raw) - excess,
            )
        )
    whole = raw[: len(raw) - excess]
    day, now = sds_day(path), time.time_ns()
    # Warnings are process-global: decode one file at a time while recording them, and
    # keep only ObsPy's, so no other thread's warning is blamed on this file.
    with _DECODE_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            stream = read_mseed_bytes(whole)
            fast = stream_is_possible(stream, day, now)
        except Exception:  # noqa: BLE001 - fall back to record-by-record decoding
            fast = False
        if not fast:
            caught.clear()  # the record-by-record decode warns again where it applies
            stream, bad = decode_by_record(whole, reclen, day, now)
    # Each warning once: bisecting a file decodes some records more than once.
    messages = dict.fromkeys(str(w.message) for w in caught if "obspy" in str(w.filename))
    problems.extend(
        Problem(path, f"decoder warning: {m}; affected records skipped") for m in messages
    )
    problems.extend(
        Problem(
            path,
            f"corrupt miniSEED record ({b.reason}) at byte {b.offset}; this record not "
            "ingested, the file's other records were",
            npts=b.npts,
            byte_offset=b.offset,
        )
        for b in bad
    )
    return stream, problems


def decode(path: str) -> tuple[list[Segment], list[Problem]]:
    """Decode one file into segments of int32 counts, reporting every problem found."""
    problems: list[Problem] = []
    is_sac = Path(path).suffix in _SAC_SUFFIXES
    stream = obspy.Stream()
    try:
        if is_sac:
            stream = obspy.read(path, format="SAC")
        else:
            stream, problems = _decode_mseed(path)
    except Exception as exc:  # noqa: BLE001
        return [], [Problem(path, f"unreadable waveform file ({exc}); file not ingested")]
    segments: list[Segment] = []
    for tr in stream:
        s = tr.stats
        try:
            ch = _channel_from_codes(s.network, s.station, s.location, s.channel)
        except InvalidCodeError as exc:
            problems.append(Problem(path, f"{exc}; trace not ingested", npts=int(s.npts)))
            continue
        counts, why = _as_counts(tr, path)
        if counts is None:
            problems.append(
                Problem(path, why, ch.nslc, to_ns(s.starttime), to_ns(s.endtime), int(s.npts))
            )
            continue
        if s.npts == 0:
            continue
        segments.append(Segment(ch, to_ns(s.starttime), float(s.sampling_rate), counts, path))
    return segments, problems
