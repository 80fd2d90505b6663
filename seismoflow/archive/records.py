"""miniSEED record headers judged one by one: which records are possible, which are not.

A day file is decoded whole when every trace it yields is possible (the fast path). When one
is not (a sampling rate of 0, a year 9999, a start outside the file's SDS day, a record
claiming more samples than it can hold), the file is read record by record: each impossible
record is reported alone with its byte offset, and the other records are decoded as usual.

The times a header claims never size any work: a record may only extend its own SDS day
(see :func:`sds_span`), so a corrupt year cannot make planning walk millions of days.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import obspy
from obspy.io.mseed.core import _read_mseed
from obspy.io.mseed.util import get_record_information

from seismoflow.times import NS_PER_DAY, NS_PER_S, to_ns

# NET.STA.LOC.CHA.TYPE.YEAR.DOY with any characters in the codes, so bad codes are seen
# (and quarantined) rather than skipped.
SDS_NAME = re.compile(r"^(?P<nslc>.+)\.(?P<type>[A-Z])\.(?P<year>\d{4})\.(?P<doy>\d{3})$")

# Sampling rates outside this range (Hz) are corrupt headers, not instruments: SEED band
# codes end at 5 kHz (G/F) and state-of-health channels go down to ~1e-4 Hz.
MIN_SAMPLING_RATE = 1e-5
MAX_SAMPLING_RATE = 1e6
# A record may start this far after its SDS day ends, or end this far before it starts
# (clock corrections and writers that split at the record nearest midnight).
MIDNIGHT_SLACK_NS = 60 * NS_PER_S
# Headers dated after "now" by more than this are corrupt (clock skew of the writer).
FUTURE_SLACK_NS = NS_PER_DAY
# The fixed header of a miniSEED record (bytes); data never start before it ends.
FIXED_HEADER = 48
# Most samples one byte of data can hold, per SEED encoding code (Steim-2: 7 per 4 bytes).
_SAMPLES_PER_BYTE = {0: 1.0, 1: 0.5, 3: 0.25, 4: 0.25, 5: 0.125, 10: 1.0, 11: 1.75}
_MAX_SAMPLES_PER_BYTE = 2.0  # other (rare, old) encodings: a loose bound


_EPOCH = dt.date(1970, 1, 1)


def read_mseed_bytes(raw: bytes) -> obspy.Stream:
    """Decode whole miniSEED records with ObsPy's reader, called directly.

    ``obspy.read`` looks the format plugin up in the package metadata on every call
    (~0.7 ms, as much as decoding a small file). The only use of ObsPy's private
    ``_read_mseed`` (pinned ObsPy range; ``tests/test_hostile_archive.py`` checks it still
    reads as ``obspy.read`` does).
    """
    return _read_mseed(io.BytesIO(raw))


def sds_day(path: str | Path) -> int | None:
    """Start (ns, UTC) of the day an SDS day-file name says it holds, or ``None``."""
    match = SDS_NAME.match(Path(path).name)
    if not match or match["type"] != "D":
        return None
    year, doy = int(match["year"]), int(match["doy"])
    if not 1 <= doy <= 366 or year < 1:
        return None
    # date arithmetic, not string parsing: this runs for every file a run decodes
    days = (dt.date(year, 1, 1) - _EPOCH).days + doy - 1
    return days * NS_PER_DAY


def impossible(
    sampling_rate: float, start_ns: int, npts: int, day_ns: int | None, now_ns: int
) -> str:
    """Why a record or trace with this header cannot be real data ("" if it can).

    ``day_ns`` is the SDS day of the file (``None`` for files without an SDS name): the
    samples must overlap that day, give or take :data:`MIDNIGHT_SLACK_NS`.
    """
    if not MIN_SAMPLING_RATE <= sampling_rate <= MAX_SAMPLING_RATE:
        return (
            f"impossible sampling rate {sampling_rate:g} Hz (outside "
            f"{MIN_SAMPLING_RATE:g}..{MAX_SAMPLING_RATE:g} Hz)"
        )
    if not 0 <= start_ns <= now_ns + FUTURE_SLACK_NS:
        return f"impossible start time {_iso(start_ns)} (before 1970 or in the future)"
    end_ns = start_ns + round(max(npts - 1, 0) / sampling_rate * NS_PER_S)
    if day_ns is not None and (
        start_ns >= day_ns + NS_PER_DAY + MIDNIGHT_SLACK_NS or end_ns < day_ns - MIDNIGHT_SLACK_NS
    ):
        return f"start time {_iso(start_ns)} outside the file's SDS day {_iso(day_ns)[:10]}"
    return ""


def _iso(ns: int) -> str:
    try:
        return str(obspy.UTCDateTime(ns=int(ns)))
    except Exception:  # noqa: BLE001 - beyond what UTCDateTime prints
        return f"{ns} ns"


def header_problem(header: dict[str, Any], day_ns: int | None, now_ns: int) -> str:
    """Why the record header from ``get_record_information`` is impossible ("" if not)."""
    npts, reclen = int(header["npts"]), int(header["record_length"])
    capacity = int(
        (reclen - FIXED_HEADER)
        * _SAMPLES_PER_BYTE.get(int(header["encoding"]), _MAX_SAMPLES_PER_BYTE)
    )
    if npts > capacity:
        return f"{npts} samples claimed, more than a {reclen}-byte record can hold ({capacity})"
    return impossible(float(header["samp_rate"]), to_ns(header["starttime"]), npts, day_ns, now_ns)


def stream_is_possible(stream: obspy.Stream, day_ns: int | None, now_ns: int) -> bool:
    """Whether every trace of a whole-file decode is possible (the fast path holds).

    A day file is one channel at one rate: several rates mean a corrupt rate somewhere.
    """
    if day_ns is not None and len({tr.stats.sampling_rate for tr in stream}) > 1:
        return False
    return not any(
        impossible(
            float(tr.stats.sampling_rate), int(tr.stats.starttime.ns), int(tr.stats.npts),
            day_ns, now_ns,
        )
        for tr in stream
    )  # fmt: skip


@dataclass(frozen=True)
class BadRecord:
    """A record left out of a file's samples: where it starts (bytes) and why."""

    offset: int
    reason: str
    npts: int = 0


def decode_by_record(
    raw: bytes, reclen: int, day_ns: int | None, now_ns: int
) -> tuple[obspy.Stream, list[BadRecord]]:
    """Decode ``raw`` (whole records) leaving out each impossible or undecodable record.

    Good records are decoded together, so contiguous ones join into one trace exactly as
    in a whole-file read; only if that fails is each decoded alone to find the culprit.
    In an SDS day file, records at a sampling rate other than most records' are left out.
    """
    bad: list[BadRecord] = []
    good: list[tuple[int, float]] = []
    buffer = io.BytesIO(raw)
    for offset in range(0, len(raw) - reclen + 1, reclen):
        try:
            header = get_record_information(buffer, offset)
            why = header_problem(header, day_ns, now_ns)
        except Exception as exc:  # noqa: BLE001 - an unreadable header is itself the reason
            header, why = {"npts": 0}, f"unreadable record header ({exc})"
        if why:
            bad.append(BadRecord(offset, why, int(header["npts"])))
        else:
            good.append((offset, float(header["samp_rate"])))
    if day_ns is not None and good:
        rate = Counter(r for _, r in good).most_common(1)[0][0]
        bad += [
            BadRecord(o, f"sampling rate {r:g} Hz where the file's other records have {rate:g} Hz")
            for o, r in good
            if r != rate
        ]
        good = [(o, r) for o, r in good if r == rate]
    stream, failed = _decode(raw, [o for o, _ in good], reclen)
    return stream, sorted(bad + failed, key=lambda b: b.offset)


def _decode(
    raw: bytes, offsets: Sequence[int], reclen: int
) -> tuple[obspy.Stream, list[BadRecord]]:
    """Decode the records at ``offsets`` together; bisect to the ones that fail alone.

    Decoder warnings pass through to the caller (which reports them): libmseed warns on
    damaged data it still decodes, and some writers trip its integrity checks on every
    record, so a warning alone never costs a record.
    """
    if not offsets:
        return obspy.Stream(), []
    joined = b"".join(raw[o : o + reclen] for o in offsets)
    try:
        return read_mseed_bytes(joined), []
    except Exception as exc:  # noqa: BLE001 - find the failing record below
        if len(offsets) == 1:
            return obspy.Stream(), [BadRecord(offsets[0], f"undecodable data: {exc}")]
    # Halve the set until each failing record stands alone: ~2 log2(n) decodes per bad one.
    half = len(offsets) // 2
    first, bad_first = _decode(raw, offsets[:half], reclen)
    second, bad_second = _decode(raw, offsets[half:], reclen)
    return first + second, bad_first + bad_second


def sds_span(path: Path, day_ns: int, size: int) -> tuple[int, int]:
    """The time span (ns) an SDS day file's samples may cover, for planning.

    From the first and last records where their headers are possible, and never more than
    the file's own day and its neighbours: a corrupt time in a header cannot extend it.
    """
    start, end = day_ns, day_ns + NS_PER_DAY - 1
    now = obspy.UTCDateTime().ns
    first = get_record_information(str(path))
    reclen = int(first["record_length"])
    n = size // reclen
    last = get_record_information(str(path), (n - 1) * reclen) if n > 1 else first
    if not header_problem(first, day_ns, now):
        start = to_ns(first["starttime"])
    if not header_problem(last, day_ns, now):
        end = to_ns(last["endtime"])
    start = min(max(start, day_ns - NS_PER_DAY), day_ns + NS_PER_DAY - 1)
    end = max(min(end, day_ns + 2 * NS_PER_DAY - 1), start)
    return start, end


def header_sampling_rate(path: str) -> float | None:
    """The sampling rate of most of a file's first, middle and last record headers.

    Impossible headers do not vote, so one corrupt record cannot set a channel's rate.
    """
    size = Path(path).stat().st_size
    first = get_record_information(path)
    reclen = int(first["record_length"])
    n = max(size // reclen, 1)
    day, now = sds_day(path), obspy.UTCDateTime().ns
    rates = []
    for k in sorted({0, n // 2, n - 1}):
        try:
            header = first if k == 0 else get_record_information(path, k * reclen)
        except Exception:  # noqa: BLE001 - a damaged record does not vote
            continue
        if not header_problem(header, day, now):
            rates.append(float(header["samp_rate"]))
    return Counter(rates).most_common(1)[0][0] if rates else None
