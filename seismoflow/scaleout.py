"""Archive batches for a Dask cluster, as plain functions: work units, tallies, overhead.

The ``archive-batch`` flow (``flows.archive_batch``) splits an ingest plan into batches of
whole station-days (so one task builds every channel of a station-day), submits a bounded
number at a time and folds each finished batch into small tallies; nothing here imports
Prefect or Dask.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from seismoflow.archive.sources import Problem
from seismoflow.ingest import ChannelDayUnit, UnitResult
from storage.schema import describe_flags


def station_of(channel: str) -> str:
    """``NET.STA`` of a ``NET.STA.LOC.CHA`` channel id."""
    return ".".join(channel.split(".")[:2])


def station_days(units: Iterable[ChannelDayUnit]) -> dict[tuple[str, int], list[ChannelDayUnit]]:
    """Units grouped by (station, day), sorted by station then day."""
    groups: dict[tuple[str, int], list[ChannelDayUnit]] = defaultdict(list)
    for u in units:
        groups[(station_of(u.channel), u.day_ns)].append(u)
    return {k: groups[k] for k in sorted(groups)}


def station_day_batches(
    units: Iterable[ChannelDayUnit], per_batch: int, batch_bytes: int
) -> Iterator[list[ChannelDayUnit]]:
    """Batches of at most ``per_batch`` whole station-days and about ``batch_bytes`` of
    source files (a station-day bigger than that is a batch of its own). Lazy: a batch is
    built only when the flow is ready to submit it."""
    if per_batch < 1 or batch_bytes < 1:
        raise ValueError(f"per_batch ({per_batch}) and batch_bytes ({batch_bytes}) must be > 0")
    batch: list[ChannelDayUnit] = []
    days = size = 0
    for group in station_days(units).values():
        group_size = sum(u.size for u in group)
        if batch and (days >= per_batch or size + group_size > batch_bytes):
            yield batch
            batch, days, size = [], 0, 0
        batch.extend(group)
        days += 1
        size += group_size
    if batch:
        yield batch


def batch_station_days(n_station_days: int, threads: int, most: int) -> int:
    """Station-days per batch: ``most``, or fewer so every worker thread gets at least two
    batches (a small archive still spreads over the cluster)."""
    return max(1, min(most, -(-n_station_days // (2 * max(threads, 1)))))


def count_station_days(units: Iterable[ChannelDayUnit]) -> int:
    return len({(station_of(u.channel), u.day_ns) for u in units})


@dataclass
class Coverage:
    """Per-station coverage from unit results: channels, days, channel-days, recorded
    hours (samples / sampling rate) and flagged channel-days. Memory grows with stations
    and days, never with samples."""

    channels: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    days: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    channel_days: Counter[str] = field(default_factory=Counter)
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    flagged: Counter[str] = field(default_factory=Counter)

    def add(self, results: Iterable[UnitResult]) -> None:
        for r in results:
            row = r.row
            if not row or not int(row.get("n_samples", 0)):
                continue
            station = station_of(str(row["channel"]))
            self.channels[station].add(str(row["channel"]).split(".", 2)[2])
            self.days[station].add(int(row["day_ns"]))
            self.channel_days[station] += 1
            rate = float(row["sampling_rate"]) or 1.0
            self.seconds[station] += int(row["n_samples"]) / rate
            if describe_flags(int(row["flags"])):
                self.flagged[station] += 1

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for station in sorted(self.days):
            days = sorted(self.days[station])
            out.append(
                {
                    "station": station,
                    "channels": ",".join(sorted(self.channels[station])),
                    "first_day": str(np.datetime64(days[0], "ns").astype("datetime64[D]")),
                    "last_day": str(np.datetime64(days[-1], "ns").astype("datetime64[D]")),
                    "days": len(days),
                    "channel_days": self.channel_days[station],
                    "recorded_hours": round(self.seconds[station] / 3600, 2),
                    "flagged_channel_days": self.flagged[station],
                }
            )
        return out


@dataclass(frozen=True)
class Overhead:
    """Orchestration cost of a mapped phase: ``wall_s`` of the phase on ``threads`` worker
    threads against ``work_s``, the seconds the tasks' own code ran (summed over tasks).

    ``overhead`` is the share of the threads' time not spent in task code:
    ``1 - work_s / (wall_s * threads)`` (scheduling, Prefect task-run bookkeeping,
    serialisation, and idle threads at the phase's tail)."""

    wall_s: float
    work_s: float
    threads: int
    tasks: int

    @property
    def overhead(self) -> float:
        capacity = self.wall_s * max(self.threads, 1)
        return 0.0 if capacity <= 0 else max(0.0, 1.0 - self.work_s / capacity)

    def as_dict(self) -> dict[str, Any]:
        return {
            "wall_s": round(self.wall_s, 3),
            "work_s": round(self.work_s, 3),
            "threads": self.threads,
            "tasks": self.tasks,
            "overhead": round(self.overhead, 4),
        }


def window_chunks(indices: Sequence[int], size: int) -> Iterator[list[int]]:
    """Event-window trace indices in chunks of ``size`` (one task each)."""
    for i in range(0, len(indices), size):
        yield list(indices[i : i + size])


def add_counts(total: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Sum ``part`` into ``total`` (numbers, and dicts of numbers such as flag counts)."""
    for key, value in part.items():
        if isinstance(value, dict):
            add_counts(total.setdefault(key, {}), value)
        else:
            total[key] = total.get(key, 0) + value
    return total


def batch_failed(units: Sequence[ChannelDayUnit], exc: BaseException) -> list[Problem]:
    """One quarantine entry per channel-day of a batch whose task failed on the cluster."""
    return [
        Problem(
            ",".join(f.path for f in u.files),
            f"batch failed on the Dask cluster ({type(exc).__name__}: {exc}); re-run the "
            "same command to retry (done channel-days are skipped)",
            u.channel,
            u.day_ns,
        )
        for u in units
    ]
