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

from seismoflow.archive.ingest import ChannelDayUnit, UnitResult
from seismoflow.archive.sources import Problem
from seismoflow.storage.schema import describe_flags


def station_of(channel: str) -> str:
    """``NET.STA`` of a ``NET.STA.LOC.CHA`` channel id."""
    return ".".join(channel.split(".")[:2])


def station_days(units: Iterable[ChannelDayUnit]) -> dict[tuple[str, int], list[ChannelDayUnit]]:
    """Units grouped by (station, day), sorted by station then day."""
    groups: dict[tuple[str, int], list[ChannelDayUnit]] = defaultdict(list)
    for u in units:
        groups[(station_of(u.channel), u.day_ns)].append(u)
    return {k: groups[k] for k in sorted(groups)}


# Work of one channel-day apart from its bytes, in bytes of source: ingesting the whole real
# archive one station-day at a time took ~7.8 ms per channel-day (open, assemble, write, the
# row) and ~0.052 s per MB of miniSEED decoded (the 2021 year alone: 6.5 ms and 0.089 s per
# MB; ``bench/orchestration.py --calibrate``, 2026-11-30, BENCHMARKS.md), so a channel-day
# costs as much as ~75-150 kB of source (300 kB before the ingest got faster). Most of this
# archive's channel-days are event-length files, where source bytes alone say little of
# the work.
UNIT_COST_BYTES = 150_000
# Batches get smaller as the phase runs out of work, down to total / (TAIL_SHARE x threads):
# the idle tail of the last wave is at most about one such batch per thread.
TAIL_SHARE = 16


def work_estimate(units: Iterable[ChannelDayUnit]) -> int:
    """Estimated work of ``units`` in bytes of source (``UNIT_COST_BYTES`` per channel-day)."""
    return sum(u.size + UNIT_COST_BYTES for u in units)


def guided_target(remaining: float, total: float, threads: int) -> float:
    """Work of the next batch: half of each thread's share of the ``remaining`` work, never
    under ``total / (TAIL_SHARE x threads)`` ("guided" self-scheduling: large batches first,
    small ones at the end, so every thread finishes at about the same time). One thread
    has no tail to balance: no limit."""
    if threads <= 1:
        return float("inf")
    return max(remaining / (2 * threads), total / (TAIL_SHARE * threads))


def station_day_batches(
    units: Iterable[ChannelDayUnit], per_batch: int, batch_bytes: int, threads: int = 1
) -> Iterator[list[ChannelDayUnit]]:
    """Batches of whole station-days, largest first, for ``threads`` worker threads.

    Each batch holds at most ``per_batch`` station-days and about ``batch_bytes`` of source
    files (a station-day bigger than that is a batch of its own): these bound a worker's
    memory and make a large archive many tasks. Under those caps a batch gets the
    :func:`guided_target` share of the estimated work still to batch (:func:`work_estimate`),
    so the first batches are the largest and the last ones small. Station-days go in station
    then day order (one station's channels are opened by few tasks). Batches are built
    lazily, as the flow submits them."""
    if per_batch < 1 or batch_bytes < 1:
        raise ValueError(f"per_batch ({per_batch}) and batch_bytes ({batch_bytes}) must be > 0")
    groups = list(station_days(units).values())
    costs = [work_estimate(g) for g in groups]
    total = remaining = float(sum(costs))
    target = guided_target(remaining, total, threads)
    batch: list[ChannelDayUnit] = []
    days = size = 0
    cost = 0.0
    for group, group_cost in zip(groups, costs, strict=True):
        group_size = sum(u.size for u in group)
        if batch and (
            days >= per_batch or size + group_size > batch_bytes or cost + group_cost / 2 > target
        ):
            yield batch
            remaining -= cost
            target = guided_target(remaining, total, threads)
            batch, days, size, cost = [], 0, 0, 0.0
        batch.extend(group)
        days += 1
        size += group_size
        cost += group_cost
    if batch:
        yield batch


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
    idle: dict[str, float] = field(default_factory=dict)  # idle_split of the phase

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
            "idle": dict(self.idle),
        }


class WorkerMemory:
    """Resident memory of each worker process after each of its tasks, against the items
    (channel-days, event-window traces) it had processed by then: whether a worker's memory
    levels off or keeps growing with the archive. Small: one point per task."""

    def __init__(self) -> None:
        self.items: Counter[str] = Counter()
        self.curves: dict[str, list[tuple[int, int]]] = defaultdict(list)
        self.peaks: dict[str, int] = {}

    def add(self, timed: Any, items: int) -> None:
        """One finished task: ``timed`` has ``worker`` (``host:pid:thread``), ``rss`` and
        ``peak_rss`` (bytes; 0 where the worker could not tell)."""
        process = timed.worker.rsplit(":", 1)[0]
        self.items[process] += items
        if timed.rss:
            self.curves[process].append((self.items[process], int(timed.rss)))
        self.peaks[process] = max(self.peaks.get(process, 0), int(timed.peak_rss))

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """Per worker process: items, peak MB (``VmHWM``, the whole process life) and the
        curve ``[items processed, MB resident after the task]``."""
        mb = 2**20
        return {
            process: {
                "items": self.items[process],
                "peak_mb": round(self.peaks.get(process, 0) / mb, 1),
                "rss_mb": [[n, round(r / mb, 1)] for n, r in self.curves.get(process, [])],
            }
            for process in sorted(self.items)
        }


def idle_split(
    start: float, end: float, spans: Iterable[tuple[str, float, float]], threads: int
) -> dict[str, float]:
    """Where the worker threads' idle time of a phase ``[start, end)`` went, from the
    ``(thread, work start, work end)`` of its tasks (wall-clock seconds): before each
    thread's first task (``start_s``: submit, scheduling, the first task run's set-up),
    between a thread's tasks (``between_s``: the per-task cost of Prefect and Dask on a
    thread that always had a task waiting), after each thread's last task (``tail_s``: the
    last wave) and threads that ran no task (``unused_s``)."""
    by_thread: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for thread, s, e in spans:
        by_thread[thread].append((s, e))
    head = between = tail = 0.0
    for ivs in by_thread.values():
        ivs.sort()
        head += max(0.0, ivs[0][0] - start)
        tail += max(0.0, end - max(e for _, e in ivs))
        between += sum(max(0.0, b[0] - a[1]) for a, b in zip(ivs, ivs[1:], strict=False))
    unused = max(0, threads - len(by_thread)) * max(0.0, end - start)
    return {
        "start_s": round(head, 3),
        "between_s": round(between, 3),
        "tail_s": round(tail, 3),
        "unused_s": round(unused, 3),
    }


def window_chunks(indices: Sequence[int], size: int, threads: int = 1) -> Iterator[list[int]]:
    """Event-window trace indices in chunks of at most ``size`` (one task each), guided as
    :func:`station_day_batches` (traces cost about the same each): large chunks first,
    down to ``len(indices) / (TAIL_SHARE x threads)`` at the end."""
    if size < 1:
        raise ValueError(f"size ({size}) must be > 0")
    total = len(indices)
    i = 0
    while i < total:
        n = min(size, max(1, round(min(guided_target(total - i, total, threads), size))))
        yield list(indices[i : i + n])
        i += n


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
