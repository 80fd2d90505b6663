"""Exact time arithmetic in integer nanoseconds (UTC, since 1970-01-01).

Sample times are ``t0 + i * 1e9 / sampling_rate``; rates such as 120 Hz do not give whole
nanosecond periods, so indices are computed with :class:`fractions.Fraction`, never by
accumulating floats.
"""

from __future__ import annotations

import datetime as dt
import functools
from fractions import Fraction

import numpy as np
from obspy import UTCDateTime

from seismoflow.errors import BadInputError

NS_PER_S = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_S
NAT = int(np.iinfo(np.int64).min)


def to_ns(t: UTCDateTime | str | dt.datetime) -> int:
    """UTC time to integer nanoseconds since the epoch."""
    return int(UTCDateTime(t).ns)


def parse_ns(value: UTCDateTime | str | dt.datetime, name: str) -> int:
    """``value`` as :func:`to_ns`, or a :class:`BadInputError` naming ``name`` (an option or
    a parameter) with an example of a time that works."""
    try:
        return to_ns(value)
    except Exception as exc:  # noqa: BLE001 - ObsPy raises several types for a bad time
        raise BadInputError(
            f"{name} {value!r} is not a UTC time; give ISO 8601 such as 2022-01-02T00:00"
        ) from exc


def from_ns(ns: int) -> UTCDateTime:
    return UTCDateTime(ns=int(ns))


def day_start_ns(ns: int) -> int:
    """Start (00:00 UTC) of the day holding ``ns``."""
    return (ns // NS_PER_DAY) * NS_PER_DAY


@functools.lru_cache(maxsize=1024)
def rate_fraction(sampling_rate: float) -> Fraction:
    """A sampling rate as an exact fraction (rates in miniSEED are decimal numbers)."""
    return Fraction(str(float(sampling_rate))).limit_denominator(1_000_000)


def samples_per_day(sampling_rate: float) -> int:
    """Length of a day's sample axis: enough for any grid phase within the day."""
    spd = rate_fraction(sampling_rate) * 86_400
    return int(spd) if spd.denominator == 1 else int(spd) + 1


def sample_index(t_ns: int, t0_ns: int, sampling_rate: float) -> tuple[int, int]:
    """Nearest grid index of ``t_ns`` on the grid starting at ``t0_ns``, and the residual (ns).

    The residual is ``t_ns`` minus the grid time of that index, rounded to whole ns.
    """
    rate = rate_fraction(sampling_rate)
    exact = Fraction(t_ns - t0_ns) * rate / NS_PER_S
    idx = round(exact)
    residual = t_ns - t0_ns - Fraction(idx * NS_PER_S) / rate
    return idx, round(residual)
