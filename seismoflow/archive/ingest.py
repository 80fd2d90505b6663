"""Archive ingest as plain functions: plan, prepare the store, work units, finalize.

The Prefect flow (``flows.ingest``) only wires these together. A plan splits the archive
into channel-day units, grouped by station-day and batched by source bytes so one task does
a meaningful amount of work. Units write disjoint regions, record completion in the store's
ledger last, and are skipped on re-runs when their source files are unchanged.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import obspy
import pandas as pd
import zarr

from seismoflow.archive.assemble import ChannelDay, assemble_day
from seismoflow.archive.metadata import MetadataIndex, catalog_table, read_channel_table
from seismoflow.archive.records import header_sampling_rate
from seismoflow.archive.sources import Problem, Segment, SourceFile, decode, scan
from seismoflow.archive.windows import WindowSpec, cut_window, plan_windows, window_days
from seismoflow.ids import ChannelId
from seismoflow.settings import Settings
from seismoflow.storage.continuous import (
    LEDGER,
    WRITING,
    ChannelArray,
    ContinuousReader,
    DayLedger,
    DayRecord,
    built_from,
    ledger_frame,
    open_channel,
    writing_row,
)
from seismoflow.storage.documents import RunDocuments, begin_run, end_run, run_documents
from seismoflow.storage.events import (
    TraceWriter,
    events_group,
    group_name,
    pending_traces,
    trace_keys,
)
from seismoflow.storage.finalize import finalize_store
from seismoflow.storage.fsio import store_location
from seismoflow.storage.location import open_root, store_lock
from seismoflow.storage.schema import (
    PCODEC_PAGE,
    ContinuousEncoding,
    ContinuousLayout,
    EventWindowLayout,
    Flag,
    SchemaError,
    append_traces,
    choose_encoding,
    create_continuous_many,
    create_events,
    describe_flags,
)
from seismoflow.storage.tables import (
    append_rows,
    read_table,
    write_source_document,
    write_table,
)
from seismoflow.times import NAT, NS_PER_DAY, NS_PER_S, samples_per_day


@dataclass(frozen=True)
class UnitFile:
    """A source file of a unit: ``home`` if the unit is the file's first channel-day;
    ``named_channel`` if the file's name fixes its channel (SDS)."""

    path: str
    home: bool
    named_channel: bool


@dataclass(frozen=True)
class ChannelDayUnit:
    """One channel-day and the files that hold its samples."""

    channel: str
    day_ns: int
    files: tuple[UnitFile, ...]
    sources: tuple[dict[str, object], ...]  # fingerprints (path, size, mtime) of the files
    sampling_rate: float
    metadata_rate: float | None
    has_metadata: bool
    size: int
    covered_ns: int  # time span the unit's files cover within the day (a density estimate)


@dataclass
class IngestPlan:
    units: list[ChannelDayUnit]
    problems: list[Problem]
    n_files: int
    catalog: pd.DataFrame
    channels: pd.DataFrame
    documents: list[tuple[str, Path]] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)  # files skipped: name starts with '.'

    def batches(self, batch_bytes: int) -> list[list[ChannelDayUnit]]:
        """Station-days kept together, packed into batches of about ``batch_bytes``."""
        by_station_day: dict[tuple[str, int], list[ChannelDayUnit]] = defaultdict(list)
        for u in self.units:
            by_station_day[(u.channel.rsplit(".", 2)[0], u.day_ns)].append(u)
        batches: list[list[ChannelDayUnit]] = [[]]
        size = 0
        for key in sorted(by_station_day):
            group = by_station_day[key]
            if batches[-1] and size + sum(u.size for u in group) > batch_bytes:
                batches.append([])
                size = 0
            batches[-1].extend(group)
            size += sum(u.size for u in group)
        return [b for b in batches if b]


def _problem_rows(problems: Iterable[Problem], stage: str) -> list[dict[str, Any]]:
    now = time.time_ns()
    return [
        {
            **p.as_record(),
            "stage": stage,
            "recorded_at_ns": now,
            "start_ns": NAT if p.start_ns is None else p.start_ns,
            "end_ns": NAT if p.end_ns is None else p.end_ns,
            "byte_offset": -1 if p.byte_offset is None else p.byte_offset,
        }
        for p in problems
    ]


def _read_header_rate(path: str) -> float | None:
    """Sampling rate of most possible headers (miniSEED: first, middle, last record), or
    ``None`` if no possible header can be read."""
    try:
        if Path(path).suffix.lower() != ".sac":
            return header_sampling_rate(path)
        st = obspy.read(path, headonly=True, format="SAC")
        return float(st[0].stats.sampling_rate) if len(st) else None
    except Exception:  # noqa: BLE001 - damaged: its unit decodes and reports it
        return None


def plan_ingest(
    sds: Path,
    stations: Path | None,
    events: Path | None,
    start_ns: int | None = None,
    end_ns: int | None = None,
) -> IngestPlan:
    """Scan the sources and split them into channel-day units (no store writes)."""
    found = scan(sds, start_ns, end_ns)
    problems = list(found.problems)
    channels = pd.DataFrame()
    documents: list[tuple[str, Path]] = []
    if stations is not None:
        try:
            channels = read_channel_table(stations)
            documents.append(("stationxml", stations))
        except Exception as exc:  # noqa: BLE001
            problems.append(
                Problem(
                    str(stations),
                    f"unreadable StationXML ({exc}); ingest continues without station metadata",
                )
            )
    catalog = pd.DataFrame()
    if events is not None:
        try:
            catalog, rejected = catalog_table(obspy.read_events(str(events)))
            problems.extend(Problem(str(events), why, channel=eid) for eid, why in rejected)
            documents.append(("quakeml", events))
        except Exception as exc:  # noqa: BLE001
            problems.append(
                Problem(str(events), f"unreadable QuakeML ({exc}); no event windows will be cut")
            )
        if start_ns is not None and len(catalog):
            catalog = catalog[catalog["origin_time_ns"] >= start_ns]
        if end_ns is not None and len(catalog):
            catalog = catalog[catalog["origin_time_ns"] < end_ns]
    metadata = MetadataIndex(channels) if len(channels) else None
    by_unit: dict[tuple[ChannelId, int], list[SourceFile]] = defaultdict(list)
    for f in found.files:
        for day in f.days(start_ns, end_ns):
            by_unit[(f.channel, day)].append(f)
    file_rates: dict[str, float | None] = {}
    units = []
    for (ch, day), files in sorted(by_unit.items()):
        for f in files:
            if f.path not in file_rates:
                file_rates[f.path] = _read_header_rate(f.path)
        # The day's rate: its files' most common; segments at another are quarantined.
        header_rates = [r for r in (file_rates[f.path] for f in files) if r] or [0.0]
        rate = Counter(header_rates).most_common(1)[0][0]
        info = metadata.channel(ch, day + NS_PER_DAY // 2) if metadata else None
        if info is None and metadata is not None:
            info = metadata.channel(ch, day)
        units.append(
            ChannelDayUnit(
                channel=ch.nslc,
                day_ns=day,
                files=tuple(
                    UnitFile(f.path, f.first_day_ns == day and f.channel == ch, f.named_channel)
                    for f in files
                ),
                sources=tuple(f.fingerprint() for f in files),
                sampling_rate=rate,
                metadata_rate=info.sampling_rate if info else None,
                has_metadata=info is not None,
                size=sum(f.size for f in files),
                covered_ns=min(
                    NS_PER_DAY,
                    sum(
                        max(0, min(f.end_ns, day + NS_PER_DAY) - max(f.start_ns, day))
                        for f in files
                    ),
                ),
            )
        )
    return IngestPlan(
        units,
        problems,
        len({f.path for f in found.files}),
        catalog,
        channels,
        documents,
        found.hidden,
    )


def prepare_store(location: str, plan: IngestPlan, settings: Settings) -> IngestPlan:
    """Create every structure the units will write into (under the lock; idempotent).

    Returns the plan with each unit's rate set to the rate its day is stored at: a day
    stored by an earlier run keeps its rate, and data at another rate are quarantined by
    the unit instead of failing the run. Each rate of a channel has its own array.
    """
    # channel documents, and the shards of days windows read, kept until finalize
    run = begin_run(location)
    if len(plan.catalog):
        origins = plan.catalog["origin_time_ns"].astype("int64")
        run.keep_window_days(window_days(origins, window_layout(settings)))
    ledger = DayLedger(location, {u.channel for u in plan.units})
    units = []
    for u in plan.units:
        stored = ledger.get(u.channel, u.day_ns)
        if u.sampling_rate and stored is not None and stored.state not in ("", WRITING):
            u = replace(u, sampling_rate=stored.sampling_rate)
        units.append(u)
    with store_lock(location):
        root = open_root(location)
        for kind, path in plan.documents:
            media = "application/xml"
            write_source_document(root, kind, path.read_bytes(), path.name, media)
        if len(plan.channels):
            write_table(location, "channels", plan.channels)
        if len(plan.catalog):
            write_table(location, "catalog", plan.catalog)
        coverage: dict[tuple[str, float], list[int]] = defaultdict(list)
        for u in units:
            if u.sampling_rate:
                coverage[(u.channel, u.sampling_rate)].append(u.covered_ns)
        layouts = [
            _layout(
                channel,
                rate,
                settings,
                choose_encoding(
                    settings.codec,
                    settings.chunk_samples,
                    sum(covered) / len(covered) / NS_PER_S * rate,
                    samples_per_day(rate),
                ),
            )
            for (channel, rate), covered in sorted(coverage.items())
        ]
        create_continuous_many(root, layouts)
    return replace(plan, units=units)


def _layout(
    channel: str,
    rate: float,
    settings: Settings,
    encoding: ContinuousEncoding | None = None,
) -> ContinuousLayout:
    """Layout of a channel; ``encoding`` matters only when the channel's array is created
    (an existing one keeps its own, read back by :func:`open_channel`)."""
    enc = encoding or ContinuousEncoding("pcodec", settings.chunk_samples, PCODEC_PAGE)
    return ContinuousLayout(
        ChannelId.parse(channel),
        rate,
        enc.chunk_samples,
        enc.codec,
        settings.codec_level,
        enc.pcodec_page,
    )


@dataclass
class UnitResult:
    """What one channel-day unit did, for the tables and the run summary."""

    row: dict[str, Any]
    problems: list[dict[str, Any]]
    status: str  # "written", "skipped" (already done), "empty" (no usable samples)
    n_samples: int
    record: DayRecord | None = None  # a day written by this run: its ledger record


# Ledger rows are appended every this many units of a batch (and at its end): a killed run
# redoes at most this many channel-days per batch.
LEDGER_EVERY = 64


def ingest_batch(
    location: str, units: Sequence[ChannelDayUnit], settings: Settings
) -> list[UnitResult]:
    """Ingest a batch of channel-day units; one bad unit never stops the others.

    Ledger rows are appended as parts of ``tables/channel_days`` after their shards are
    written (every ``LEDGER_EVERY`` units and at the end). Days it rewrites (built before
    from other files) are first marked ``writing`` there, so a run killed between the two
    redoes them whole.

    With ``settings.io_threads()`` above 1 (object stores), the batch's channel arrays are
    opened at once and each day's shard is written on a thread while the next day is
    decoded, at most that many writes in flight; results keep the units' order.
    """
    root = open_root(location)
    ledger = DayLedger(location, {u.channel for u in units})
    cache: dict[str, tuple[list[Segment], list[Problem]]] = {}
    threads = settings.io_threads()
    rewrites = []
    for u in units:
        done, state = ledger.state(u.channel, u.day_ns)
        if u.sampling_rate and state != "" and not built_from(done, state, list(u.sources)):
            rewrites.append(writing_row(u.channel, u.day_ns, u.sampling_rate))
    if rewrites:
        append_rows(location, LEDGER, pd.DataFrame(rewrites))
    results: list[UnitResult] = []
    pending: list[tuple[ChannelDayUnit, Future[UnitResult]]] = []
    recorded = 0  # results whose ledger rows are appended

    def settle(keep: int) -> None:
        """Wait for the oldest writes until at most ``keep`` are in flight."""
        while len(pending) > keep:
            unit, future = pending.pop(0)
            try:
                results.append(future.result())
            except Exception as exc:  # noqa: BLE001 - quarantine the unit, keep going
                results.append(_failed_unit(unit, exc))

    def record() -> None:
        nonlocal recorded
        settle(0)
        written = [r.record for r in results[recorded:] if r.record is not None]
        if written:
            append_rows(location, LEDGER, ledger_frame(written))
        recorded = len(results)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        channels = _open_channels(root, units, pool if threads > 1 else None)
        try:
            for unit in units:
                try:
                    if not unit.sampling_rate:
                        pending.append((unit, _done(_unreadable_unit(unit))))
                        continue
                    opened = channels[(unit.channel, unit.sampling_rate)]
                    if isinstance(opened, Exception):
                        raise opened
                    if opened is None:
                        raise SchemaError(
                            f"no array for {unit.channel} at {unit.sampling_rate} Hz; run "
                            "prepare_store first"
                        )
                    built = _ingest_unit(opened, ledger, unit, settings, cache)
                    if isinstance(built, UnitResult):
                        pending.append((unit, _done(built)))
                    elif threads > 1:
                        pending.append((unit, pool.submit(built.write)))
                    else:
                        pending.append((unit, _done(built.write())))
                except Exception as exc:  # noqa: BLE001 - quarantine the unit, keep going
                    pending.append((unit, _done(_failed_unit(unit, exc))))
                settle(threads - 1)
                # Files shared with the next day (midnight overflow) stay cached for one
                # station.
                if len(cache) > 8:
                    cache.clear()
                if len(results) - recorded >= LEDGER_EVERY:
                    record()
        finally:
            record()
    return results


def _done(result: UnitResult) -> Future[UnitResult]:
    future: Future[UnitResult] = Future()
    future.set_result(result)
    return future


def _failed_unit(unit: ChannelDayUnit, exc: Exception) -> UnitResult:
    prob = Problem(
        ",".join(f.path for f in unit.files),
        f"channel-day failed ({type(exc).__name__}: {exc}); re-run to retry, report it if it "
        "persists",
        unit.channel,
        unit.day_ns,
    )
    return UnitResult({}, _problem_rows([prob], "ingest"), "failed", 0)


def _open_channels(
    root: zarr.Group, units: Sequence[ChannelDayUnit], pool: ThreadPoolExecutor | None
) -> dict[tuple[str, float], ChannelArray | None | Exception]:
    """The channel arrays the units write into (``None``: absent; an exception: failed to
    open, raised again by each unit of the channel), opened concurrently with a pool."""
    keys = sorted({(u.channel, u.sampling_rate) for u in units if u.sampling_rate})
    documents = run_documents(store_location(root))

    def one(key: tuple[str, float]) -> ChannelArray | None | Exception:
        try:
            return open_channel(root, ChannelId.parse(key[0]), key[1], documents)
        except Exception as exc:  # noqa: BLE001 - reported by the channel's units
            return exc

    opened = pool.map(one, keys) if pool is not None else map(one, keys)
    return dict(zip(keys, opened, strict=True))


def _unreadable_unit(unit: ChannelDayUnit) -> UnitResult:
    """No file of the unit has a readable header: report what decoding says, write nothing."""
    problems: list[Problem] = []
    for f in unit.files:
        segments, probs = decode(f.path)
        problems.extend(probs if f.home else [])
        if segments and f.home:
            problems.append(
                Problem(
                    f.path,
                    "no sampling rate could be read from the file headers; file not ingested",
                    unit.channel,
                    unit.day_ns,
                )
            )
    return UnitResult({}, _problem_rows(problems, "ingest"), "unreadable", 0)


def _ingest_unit(
    channel_array: ChannelArray,
    ledger: DayLedger,
    unit: ChannelDayUnit,
    settings: Settings,
    cache: dict[str, tuple[list[Segment], list[Problem]]],
) -> UnitResult | DayWrite:
    """Build one channel-day from its files, merged with what the store has from others
    (a :class:`DayWrite` to write it, or the result of a day already done).

    A day already built from all of these files (same size and mtime) is skipped. Otherwise
    the day is rebuilt from these files plus the stored segments of other source files (an
    earlier run over another folder); a file read again replaces its own earlier samples.
    """
    channel = ChannelId.parse(unit.channel)
    done, state = ledger.state(unit.channel, unit.day_ns)
    rec = ledger.get(unit.channel, unit.day_ns)
    if built_from(done, state, list(unit.sources)):
        assert rec is not None
        stored = [{**p, "stage": "ingest"} for p in rec.quarantine]
        return UnitResult(rec.as_row(), stored, "skipped", 0)
    paths = {f.path for f in unit.files}
    kept_sources: list[dict[str, Any]] = []
    kept_rows: list[dict[str, Any]] = []
    segments: list[Segment] = []
    if rec is not None and state not in ("", WRITING):  # merge with other files' samples
        kept_sources = [s for s in rec.sources if s["path"] not in paths]
        kept_rows = [q for q in rec.quarantine if q["source"] not in paths]
        others = {str(s["path"]) for s in kept_sources}
        segments = [
            Segment(channel, p.start_ns, p.sampling_rate, p.data, source)
            for source, p in channel_array.stored_segments(rec, others)
        ]
    problems: list[Problem] = []
    damaged = False
    for f in unit.files:
        if f.path not in cache:
            cache[f.path] = decode(f.path)
        segs, probs = cache[f.path]
        # An SDS day file must hold only its own channel (others are reported by
        # assemble_day); a loose file may hold several channels, each its own unit's.
        segments.extend(segs if f.named_channel else (s for s in segs if s.channel == channel))
        if f.home:  # report a file's decoding problems once, from its first channel-day
            problems.extend(probs)
        damaged = damaged or bool(probs)
    day = assemble_day(channel, unit.day_ns, segments, unit.sampling_rate, settings.clip_fraction)
    problems.extend(day.problems)
    flags = day.flags | (Flag.CORRUPT_RECORDS if damaged else 0)
    if not unit.has_metadata:
        flags |= Flag.NO_METADATA
    elif unit.metadata_rate is not None and unit.metadata_rate != unit.sampling_rate:
        flags |= Flag.RATE_MISMATCH_METADATA
    rows = kept_rows + _problem_rows(problems, "ingest")
    sources = sorted([*unit.sources, *kept_sources], key=lambda s: str(s["path"]))
    return DayWrite(channel_array, unit.day_ns, day, flags, rows, sources, fresh=state == "")


@dataclass
class DayWrite:
    """A channel-day assembled and not yet written: :meth:`write` writes its shard."""

    channel_array: ChannelArray
    day_ns: int
    day: ChannelDay
    flags: int
    rows: list[dict[str, Any]]
    sources: list[dict[str, Any]]
    fresh: bool

    def write(self) -> UnitResult:
        day = self.day
        record = self.channel_array.write_day(
            self.day_ns,
            t0_ns=day.t0_ns,
            offset=day.offset,
            data=day.data,
            mask=day.mask,
            flags=self.flags,
            segments=day.segments,
            quarantine=self.rows,
            sources=self.sources,
            fresh=self.fresh,
        )
        status = "written" if day.n_samples else "empty"
        return UnitResult(record.as_row(), self.rows, status, day.n_samples, record)


def record_continuous(location: str, results: Sequence[UnitResult]) -> None:
    """Add the units' problems to ``tables/quarantine`` (their days are in the ledger,
    ``tables/channel_days``, appended by :func:`ingest_batch`)."""
    problems = [p for r in results if r.status != "skipped" for p in r.problems]
    if problems:
        write_table(location, "quarantine", pd.DataFrame(problems))


def record_problems(location: str, problems: Sequence[Problem], stage: str) -> None:
    if problems:
        write_table(location, "quarantine", pd.DataFrame(_problem_rows(problems, stage)))


def window_layout(settings: Settings) -> EventWindowLayout:
    return EventWindowLayout(
        settings.window_sampling_rate,
        settings.window_pre_s,
        settings.window_post_s,
        settings.window_reference,
    )


def prepare_windows(location: str, settings: Settings) -> list[int]:
    """Plan event windows from the store's catalogue and data; append new traces.

    Returns the indices of traces still to cut (new ones, and any an interrupted run left).
    """
    layout = window_layout(settings)
    with store_lock(location):
        catalog = read_table(location, "catalog")
        channel_days = read_table(location, "channel_days")
        channels = read_table(location, "channels")
        root = open_root(location)
        group = create_events(root, layout)
        if catalog.empty or channel_days.empty:
            return pending_traces(location, group)
        for col in ("first_ns", "last_ns", "n_samples", "origin_time_ns"):
            for df in (catalog, channel_days):
                if col in df:
                    df[col] = df[col].astype("int64")
        metadata = MetadataIndex(channels)  # an empty table gives an empty index
        specs = plan_windows(catalog, channel_days, metadata, layout)
        known = trace_keys(group)
        new = [s for s in specs if s.trace_key not in known]
        run = run_documents(location)
        for i in range(0, len(new), 1024):
            part = new[i : i + 1024]
            indices = append_traces(group, [s.as_row() for s in part])
            if run is not None:  # the run's cuts take them from here, not the store
                run.keep_specs(group_name(group), dict(zip(indices, part, strict=True)))
        return pending_traces(location, group)


def _specs(
    group: zarr.Group,
    indices: Sequence[int],
    pool: ThreadPoolExecutor | None = None,
    run: RunDocuments | None = None,
) -> list[WindowSpec]:
    """Window specs of ``indices``: those the run appended, as it keeps them, or else read
    from the group, each coordinate array once (concurrently with a ``pool``)."""
    kept = run.specs(group_name(group), indices) if run is not None else None
    if kept is not None:
        return kept
    names = list(WindowSpec.__dataclass_fields__)
    rows = list(indices)

    def column(name: str) -> list[Any]:
        arr = group[name]
        assert isinstance(arr, zarr.Array)
        return list(np.asarray(arr[:])[rows].tolist())

    values = pool.map(column, names) if pool is not None else map(column, names)
    columns = dict(zip(names, values, strict=True))
    return [WindowSpec(**{k: v[i] for k, v in columns.items()}) for i in range(len(indices))]


def cut_batch(location: str, indices: Sequence[int], settings: Settings) -> dict[str, int]:
    """Cut, resample and write a batch of event-window traces; returns counts.

    With ``settings.io_threads()`` above 1 (object stores) that many windows are cut at
    once: each waits on its components' shards and on its own write.
    """
    layout = window_layout(settings)
    root = open_root(location)
    group = events_group(root)
    # the ledger read before threads share it; channels opened from the run's documents
    run = run_documents(location)
    reader = ContinuousReader(root, DayLedger(location), run)
    threads = settings.io_threads()
    writer = TraceWriter(group, threads)

    def read(ch: ChannelId, t0: int, t1: int) -> list[tuple[int, float, np.ndarray]]:
        return [(p.start_ns, p.sampling_rate, p.data) for p in reader.pieces(ch, t0, t1)]

    def cut(item: tuple[int, WindowSpec]) -> int | Exception:
        index, spec = item
        try:
            block, flags = cut_window(spec, layout, read)
            writer.write(index, block, flags)
        except Exception as exc:  # noqa: BLE001 - one bad window never stops the batch
            return exc
        return flags

    counts: Counter[str] = Counter()
    problems: list[Problem] = []
    try:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            specs = _specs(group, indices, pool if threads > 1 else None, run)
            items = list(zip(indices, specs, strict=True))
            outcomes = pool.map(cut, items) if threads > 1 else map(cut, items)
            for (_, spec), outcome in zip(items, outcomes, strict=True):
                if isinstance(outcome, Exception):
                    problems.append(
                        Problem(
                            spec.trace_key,
                            f"event window failed ({type(outcome).__name__}: {outcome}); "
                            "left unwritten, a re-run retries it",
                            spec.channel_set,
                            spec.window_start,
                        )
                    )
                    counts["failed"] += 1
                    continue
                counts["written"] += 1
                for name in describe_flags(outcome):
                    counts[f"flag_{name}"] += 1
    finally:
        writer.flush(location)
    record_problems(location, problems, "windows")
    return dict(counts)


def finalize(location: str) -> None:
    """Window ledger into the window groups, tables compacted, metadata consolidated; the
    run's channel documents forgotten."""
    try:
        finalize_store(location)
    finally:
        end_run(location)


def forget_run(location: str) -> None:
    """Drop what a run into ``location`` kept in memory (its channel documents and the
    shards kept for its windows) without finalizing the store: for a run that failed."""
    end_run(location)


def summarize_units(results: Sequence[UnitResult]) -> dict[str, Any]:
    status = Counter(r.status for r in results)
    flags: Counter[str] = Counter()
    for r in results:
        if r.row:
            for name in describe_flags(int(r.row["flags"])):
                flags[name] += 1
    reasons: Counter[str] = Counter(
        str(p["reason"]).split(";")[0].split("(")[0].strip() for r in results for p in r.problems
    )
    return {
        "units": len(results),
        **{f"units_{k}": v for k, v in status.items()},
        "samples_written": sum(r.n_samples for r in results),
        "quarantined": sum(len(r.problems) for r in results),
        "quarantine_reasons": dict(reasons),
        "flags": dict(flags),
    }


# How many skipped files a summary names (all are counted).
SKIPPED_NAMES_SHOWN = 5


def plan_summary(plan: IngestPlan) -> dict[str, Any]:
    return {
        "files": plan.n_files,
        "units": len(plan.units),
        "events": len(plan.catalog),
        "channel_epochs": len(plan.channels),
        "scan_problems": len(plan.problems),
        "skipped_hidden": len(plan.hidden),
        "skipped_hidden_first": plan.hidden[:SKIPPED_NAMES_SHOWN],
    }
