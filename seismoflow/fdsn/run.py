"""The steps of a fetch: catalogue, stations, waveforms into a local staging folder, ledger.

Fetched miniSEED is kept as the data centre sent it (whole records, split per station and
event or station and day) in a staging folder, then ingested by the very same path as a local
archive (:mod:`seismoflow.archive.ingest`), so a fetched store and an archive-ingested store are
built by one code path. What each dataselect line returned (data, no data, failed) is
recorded in the store's ``fetch_requests`` table after its files are safely on disk, so a
re-run asks only for what is missing and a killed run loses nothing it had written.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import random
import re
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import obspy
import pandas as pd
from obspy.clients.fdsn.header import FDSNException, FDSNNoDataException
from obspy.io.mseed.util import get_record_information

from seismoflow.archive.metadata import catalog_table, read_channel_table
from seismoflow.errors import BadInputError, FetchError
from seismoflow.fdsn.client import (
    AnswerTooLarge,
    FetchStats,
    PoliteClient,
    RequestTooLarge,
    RetryPolicy,
    resolve_provider,
    with_retries,
)
from seismoflow.fdsn.credentials import Credentials
from seismoflow.fdsn.select import (
    WILDCARD_LOCATION,
    BulkLine,
    LineKey,
    Region,
    batches,
    continuous_candidates,
    event_candidates,
    keep_best_set,
    next_lines,
)
from seismoflow.ids import ChannelId, InvalidCodeError, normalize_location
from seismoflow.settings import Settings
from seismoflow.storage.location import store_lock
from seismoflow.storage.tables import read_table, write_table
from seismoflow.times import from_ns, to_ns

LEDGER = "fetch_requests"
STATUS_DATA, STATUS_NODATA, STATUS_FAILED = "data", "nodata", "failed"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class EventQuery:
    """The fdsnws-event selection of a run."""

    start_ns: int
    end_ns: int
    region: Region = field(default_factory=Region)
    minmagnitude: float | None = None
    event_types: tuple[str, ...] = ()

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "starttime": from_ns(self.start_ns),
            "endtime": from_ns(self.end_ns),
            **self.region.query(),
        }
        if self.minmagnitude is not None:
            out["minmagnitude"] = self.minmagnitude
        if self.event_types:
            out["eventtype"] = ",".join(self.event_types)
        return out


def staging_folder(settings: Settings) -> Path:
    """Where fetched files wait for ingest: ``fetch_cache`` or ``STORE.fetch`` beside it."""
    if settings.fetch_cache:
        return Path(settings.fetch_cache)
    if "://" in settings.store and not settings.store.startswith("file://"):
        raise FetchError(
            f"store {settings.store!r} is remote: set a local --cache folder (setting "
            "fetch_cache) for the fetched miniSEED"
        )
    return Path(settings.store.removeprefix("file://").rstrip("/") + ".fetch")


def _atomic_write(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(content)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        settings.fetch_attempts, settings.fetch_backoff_s, settings.fetch_backoff_cap_s
    )


def make_client(
    provider: str,
    settings: Settings,
    stats: FetchStats,
    credentials: Credentials | None = None,
    *,
    discover: bool = True,
) -> PoliteClient:
    """A client for ``provider`` (URL or short name); discovery is retried like requests.

    ``discover=False`` skips ObsPy's WADL discovery (for waveform tasks, after the run's
    metadata step has already talked to the provider).
    """
    base = resolve_provider(provider)
    kwargs: dict[str, Any] = {
        "timeout": settings.fetch_timeout_s,
        "deadline_s": settings.fetch_deadline_s,
        "max_answer_bytes": settings.fetch_document_max_bytes,
    }
    if not discover:
        kwargs["_discover_services"] = False
    if credentials is not None:
        kwargs.update(credentials.client_kwargs())

    def connect() -> PoliteClient:
        return PoliteClient(base, concurrency=settings.fetch_concurrency, stats=stats, **kwargs)

    try:
        return with_retries(connect, policy(settings), stats, f"connect {base}")
    except FDSNException as exc:
        raise FetchError(
            f"cannot reach the FDSN services at {base} ({type(exc).__name__}: {exc}); check "
            "--fdsn-url and the network"
        ) from exc


# --- catalogue and stations ----------------------------------------------------------------


def fetch_catalog(
    client: PoliteClient, query: EventQuery, settings: Settings, staging: Path
) -> tuple[Path | None, pd.DataFrame]:
    """Events of ``query`` as QuakeML (kept verbatim in staging) and the catalogue table."""
    body = _fetch_document(
        lambda buf: client.get_events(**query.params(), filename=buf), client, settings, "events"
    )
    if body is None:
        return None, pd.DataFrame()
    path = _stage_document(staging / "events", "quakeml", body)
    table, _rejected = catalog_table(obspy.read_events(io.BytesIO(body)))
    client.stats.add("events", len(table))
    return path, table


def fetch_stations(
    client: PoliteClient,
    region: Region,
    start_ns: int,
    end_ns: int,
    settings: Settings,
    staging: Path,
    network: str | None = None,
    station: str | None = None,
) -> tuple[Path | None, pd.DataFrame]:
    """Stations (response level) operating in the span, kept verbatim; the channel table."""
    params: dict[str, Any] = {
        "starttime": from_ns(start_ns),
        "endtime": from_ns(end_ns),
        "level": "response",
        **region.query(),
    }
    if network:
        params["network"] = network
    if station:
        params["station"] = station
    body = _fetch_document(
        lambda buf: client.get_stations(**params, filename=buf), client, settings, "stations"
    )
    if body is None:
        return None, pd.DataFrame()
    path = _stage_document(staging / "stations", "stationxml", body)
    table, problems = valid_channels(read_channel_table(body), client.base_url)
    client.stats.add("stations", int(table[["network", "station"]].drop_duplicates().shape[0]))
    if problems:
        client.stats.add("channels_invalid_codes", len(problems))
        client.problems.extend(problems)
    return path, table


def valid_channels(table: pd.DataFrame, provider: str) -> tuple[pd.DataFrame, list[str]]:
    """The rows whose codes pass the FDSN rules (:class:`ChannelId`), and one problem per
    refused channel: a data centre's codes are input, and they name staged files."""
    if table.empty:
        return table, []
    keep: list[bool] = []
    problems: list[str] = []
    for net, sta, loc, cha in table[["network", "station", "location", "channel"]].itertuples(
        index=False, name=None
    ):
        try:
            # A station listed without channels has empty location and channel codes (it is
            # asked for with wildcards); network and station always name staged folders.
            ChannelId(str(net), str(sta), normalize_location(str(loc)), str(cha) or "XXX")
            keep.append(True)
        except InvalidCodeError as exc:
            keep.append(False)
            problems.append(
                f"{provider} station metadata: channel {net!r}.{sta!r}.{loc!r}.{cha!r} refused "
                f"({exc}); it is not fetched; report the codes to the data centre"
            )
    return table[keep].reset_index(drop=True), problems


def _fetch_document(
    download: Callable[[io.BytesIO], object],
    client: PoliteClient,
    settings: Settings,
    what: str,
) -> bytes | None:
    """The raw body ``download`` writes into a buffer, with retries; ``None`` for no data."""

    def attempt() -> bytes:
        buf = io.BytesIO()  # a fresh buffer per try: a retry never appends to a failed one
        download(buf)
        return buf.getvalue()

    try:
        return with_retries(attempt, policy(settings), client.stats, what)
    except FDSNNoDataException:
        return None


def _stage_document(folder: Path, kind: str, body: bytes) -> Path:
    """A source document kept verbatim in staging, named by its content hash."""
    path = folder / f"{kind}_{hashlib.sha256(body).hexdigest()[:16]}.xml"
    _atomic_write(path, body)
    return path


# --- waveforms ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    network: str
    station: str
    location: str
    channel: str
    start_ns: int
    end_ns: int
    offset: int
    length: int


class TruncatedData(FDSNException):
    """A miniSEED body that does not end on a whole record."""


def split_records(body: bytes) -> list[Record]:
    """The miniSEED records of a response (raises :class:`TruncatedData` if cut short)."""
    out: list[Record] = []
    offset = 0
    stream = io.BytesIO(body)
    while offset < len(body):
        try:
            info = get_record_information(stream, offset=offset)
        except Exception as exc:  # noqa: BLE001 - ObsPy raises several types here
            raise TruncatedData(f"undecodable miniSEED at byte {offset} of {len(body)}") from exc
        length = int(info["record_length"])
        if length <= 0 or offset + length > len(body):
            raise TruncatedData(f"miniSEED cut short: record at byte {offset} of {len(body)}")
        out.append(
            Record(
                str(info["network"]).strip(),
                str(info["station"]).strip(),
                str(info["location"]).strip(),
                str(info["channel"]).strip(),
                to_ns(info["starttime"]),
                to_ns(info["endtime"]),
                offset,
                length,
            )
        )
        offset += length
    return out


def _matches(rec: Record, line: BulkLine) -> bool:
    return (
        rec.network == line.network
        and rec.station == line.station
        and (line.location == WILDCARD_LOCATION or rec.location == line.location)
        and fnmatch.fnmatchcase(rec.channel, line.channel)
        and rec.end_ns >= line.start_ns
        and rec.start_ns <= line.end_ns
    )


def staged_name(line: BulkLine) -> str:
    """File of one line's data (per channel and event, or channel and day).

    One file per line, so a request split in two (size cap, 413) never writes one file
    twice; a line fetched again (after a kill) rewrites its own file with the same bytes.
    """
    what = line.event_id or from_ns(line.start_ns).strftime("%Y.%j")
    codes = _SAFE.sub("_", f"{line.network}.{line.station}.{line.location}.{line.channel}")
    slug = _SAFE.sub("_", what)[-60:]
    digest = hashlib.sha256(f"{what}|{line.start_ns}|{line.end_ns}".encode()).hexdigest()[:10]
    return f"{line.network}/{line.station}/{codes}.{slug}.{digest}.mseed"


def inside(root: Path, name: str) -> Path:
    """``root / name``, refused (:class:`FetchError`) unless it resolves inside ``root``."""
    base = root.resolve()
    path = (base / name).resolve()
    if not path.is_relative_to(base) or path == base:
        raise FetchError(
            f"staged file name {name!r} resolves outside the staging folder {base}; refused"
        )
    return path


#: Usual sampling rate (Hz) of each SEED band code; an unknown band counts as 100 Hz.
BAND_RATE_HZ = {
    "F": 1000.0, "G": 1000.0, "D": 250.0, "C": 250.0, "E": 100.0, "H": 100.0,
    "S": 50.0, "B": 40.0, "M": 10.0, "L": 1.0, "V": 0.1, "U": 0.01, "R": 0.001,
}  # fmt: skip
BYTES_PER_SAMPLE = 2  # Steim-compressed counts take 1-2 bytes; the cap's factor covers more


def expected_bytes(lines: Sequence[BulkLine]) -> int:
    """Bytes ``lines`` should take: usual band-code rate x span x 2 bytes, per channel.

    A wildcard component counts three channels, a wildcard channel code nine.
    """
    total = 0.0
    for ln in lines:
        rate = BAND_RATE_HZ.get(ln.channel[:1], 100.0)
        channels = 9 if "*" in ln.channel else 3 ** ln.channel.count("?")
        total += (ln.end_ns - ln.start_ns) / 1e9 * rate * BYTES_PER_SAMPLE * channels
    return int(total)


def answer_cap(lines: Sequence[BulkLine], settings: Settings) -> int:
    """Size cap of one dataselect answer: ``fetch_answer_factor`` x expected, with a floor."""
    factor = settings.fetch_answer_factor * expected_bytes(lines)
    return max(settings.fetch_answer_floor_bytes, int(factor))


@dataclass
class BatchResult:
    rows: list[dict[str, Any]]
    files: list[str]
    problems: list[str]


def fetch_batch(
    client: PoliteClient,
    provider: str,
    lines: Sequence[BulkLine],
    settings: Settings,
    staging: Path,
    priorities: Sequence[str],
    rng: random.Random | None = None,
    log: Callable[[str], None] | None = None,
) -> BatchResult:
    """Fetch one request's lines (split on 413), stage their records, return ledger rows."""
    rng = rng or random.Random()
    try:
        body = with_retries(
            lambda: _download_bulk(client, lines, answer_cap(lines, settings)),
            policy(settings),
            client.stats,
            f"dataselect {len(lines)} lines",
            rng=rng,
            log=log,
        )
    except RequestTooLarge:
        client.stats.add("split_413")
        if len(lines) == 1:
            return _failed(lines, provider, "HTTP 413 for a single line; lower the time span")
        half = len(lines) // 2
        first = fetch_batch(client, provider, lines[:half], settings, staging, priorities, rng, log)
        second = fetch_batch(
            client, provider, lines[half:], settings, staging, priorities, rng, log
        )
        return BatchResult(
            first.rows + second.rows, first.files + second.files, first.problems + second.problems
        )
    except FDSNNoDataException:
        body = b""
    except FDSNException as exc:
        client.stats.add("failed_requests")
        if isinstance(exc, AnswerTooLarge):
            client.stats.add("answers_too_large")
        reason = f"{type(exc).__name__}: {exc}"
        return _failed(lines, provider, reason)
    records = split_records(body) if body else []
    return _stage(records, body, lines, provider, staging, priorities, client.stats)


def _download_bulk(client: PoliteClient, lines: Sequence[BulkLine], cap: int) -> bytes:
    buf = io.BytesIO()
    with client.answer_limit(cap):
        client.get_waveforms_bulk([ln.as_tuple() for ln in lines], filename=buf)
    body = buf.getvalue()
    split_records(body)  # a body cut on a record boundary is caught here: retried
    return body


def _failed(lines: Sequence[BulkLine], provider: str, reason: str) -> BatchResult:
    rows = [_row(ln, provider, STATUS_FAILED, 0, "", reason) for ln in lines]
    return BatchResult(rows, [], [f"{len(lines)} lines failed: {reason}"])


def _row(
    line: BulkLine, provider: str, status: str, nbytes: int, file: str, note: str = ""
) -> dict[str, Any]:
    key = line.ledger_key(provider)
    return {
        "provider": key[0],
        "network": key[1],
        "station": key[2],
        "location": key[3],
        "channel": key[4],
        "start_ns": key[5],
        "end_ns": key[6],
        "event_id": line.event_id,
        "status": status,
        "bytes": int(nbytes),
        "file": file,
        "note": note,
        "fetched_at_ns": time.time_ns(),
    }


def _stage(
    records: list[Record],
    body: bytes,
    lines: Sequence[BulkLine],
    provider: str,
    staging: Path,
    priorities: Sequence[str],
    stats: FetchStats,
) -> BatchResult:
    """Write each line's records to its station file; one ledger row per line."""
    per_file: dict[str, list[Record]] = defaultdict(list)
    rows: list[dict[str, Any]] = []
    by_station: dict[tuple[str, str], list[Record]] = defaultdict(list)
    refused: set[str] = set()
    for r in records:
        try:
            ChannelId(r.network, r.station, normalize_location(r.location), r.channel)
        except InvalidCodeError as exc:
            refused.add(str(exc))
            continue
        by_station[(r.network, r.station)].append(r)
    problems = [f"{provider} dataselect: records refused: {why}" for why in sorted(refused)]
    stats.add("records_invalid_codes", len(refused))
    # Wildcard lines (a station whose metadata list no channel) of one event and station
    # keep together the single best channel set found in the answer.
    keep: dict[tuple[str, str, str, int, int], set[tuple[str, str]]] = {}
    for line in lines:
        if line.location == WILDCARD_LOCATION:
            group = (line.event_id, line.network, line.station, line.start_ns, line.end_ns)
            found = keep.setdefault(group, set())
            found |= {
                (r.location, r.channel)
                for r in by_station[(line.network, line.station)]
                if _matches(r, line)
            }
    keep = {group: keep_best_set(found, priorities) for group, found in keep.items()}
    for line in lines:
        mine = [r for r in by_station[(line.network, line.station)] if _matches(r, line)]
        if line.location == WILDCARD_LOCATION:
            chosen = keep[(line.event_id, line.network, line.station, line.start_ns, line.end_ns)]
            mine = [r for r in mine if (r.location, r.channel) in chosen]
        name = staged_name(line)
        if mine:
            inside(staging / "waveforms", name)  # codes were validated; this is the backstop
            per_file[name].extend(mine)
            rows.append(_row(line, provider, STATUS_DATA, sum(r.length for r in mine), name))
        else:
            rows.append(_row(line, provider, STATUS_NODATA, 0, ""))
    written = []
    for name, recs in sorted(per_file.items()):
        unique = sorted({r.offset: r for r in recs}.values(), key=lambda r: r.offset)
        content = b"".join(body[r.offset : r.offset + r.length] for r in unique)
        _atomic_write(inside(staging / "waveforms", name), content)
        written.append(name)
        stats.add("traces", len({(r.network, r.station, r.location, r.channel) for r in unique}))
        stats.add("waveform_bytes", len(content))
    stats.add("lines_data", sum(r["status"] == STATUS_DATA for r in rows))
    stats.add("lines_nodata", sum(r["status"] == STATUS_NODATA for r in rows))
    return BatchResult(rows, written, problems)


# --- ledger ---------------------------------------------------------------------------------


def read_ledger(location: str) -> pd.DataFrame:
    return read_table(location, LEDGER)


def ledger_status(ledger: pd.DataFrame) -> dict[LineKey, str]:
    """The last recorded status (data, nodata, failed) of every line asked before."""
    if ledger.empty:
        return {}
    return {
        (str(r.provider), str(r.network), str(r.station), str(r.location), str(r.channel),
         int(r.start_ns), int(r.end_ns)): str(r.status)
        for r in ledger.itertuples(index=False)
    }  # fmt: skip


def record_lines(location: str, rows: Sequence[dict[str, Any]]) -> None:
    """Add ledger rows (after their files are on disk); a later row for a line wins."""
    if not rows:
        return
    with store_lock(location):
        write_table(location, LEDGER, pd.DataFrame(list(rows)))


# --- a whole run's metadata and plan -------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """What a fetch run asks for (the CLI's options; JSON-friendly for flow parameters)."""

    start_ns: int
    end_ns: int
    region: dict[str, float] = field(default_factory=dict)
    minmagnitude: float | None = None
    event_types: tuple[str, ...] = ()
    network: str | None = None
    station: str | None = None
    continuous: bool = False

    def __post_init__(self) -> None:
        if self.end_ns <= self.start_ns:
            raise BadInputError(
                f"--end ({from_ns(self.end_ns)}) must be after --start ({from_ns(self.start_ns)})"
            )
        Region(**self.region)  # validates box vs circle

    @property
    def event_query(self) -> EventQuery:
        return EventQuery(
            self.start_ns, self.end_ns, Region(**self.region), self.minmagnitude, self.event_types
        )


@dataclass
class Metadata:
    """Catalogue and stations of a run, with the staged documents they came from."""

    events_path: Path | None
    catalog: pd.DataFrame
    stations_path: Path | None
    channels: pd.DataFrame  # with a ``provider`` column: who serves each station
    stats: dict[str, int]
    problems: list[str] = field(default_factory=list)  # e.g. channels refused for their codes


def fetch_metadata(
    selection: Selection,
    settings: Settings,
    staging: Path,
    credentials: Credentials | None = None,
) -> Metadata:
    """Events (first provider), then stations (each provider) around them or the region."""
    stats = FetchStats()
    problems: list[str] = []
    providers = [resolve_provider(p) for p in settings.fdsn_url]
    events_path, catalog = None, pd.DataFrame()
    region = Region(**selection.region)
    start, end = selection.start_ns, selection.end_ns
    if not selection.continuous:
        client = make_client(providers[0], settings, stats, credentials)
        events_path, catalog = fetch_catalog(client, selection.event_query, settings, staging)
        if catalog.empty:
            return Metadata(None, catalog, None, pd.DataFrame(), stats.as_dict(), problems)
        region = _around(catalog, region).widened(settings.max_distance_deg)
        # Stations operating at any event of the catalogue.
        start = int(catalog["origin_time_ns"].min()) - 3600 * 10**9
        end = int(catalog["origin_time_ns"].max()) + 3600 * 10**9
    docs: list[Path] = []
    tables: list[pd.DataFrame] = []
    for base in providers:
        client = make_client(base, settings, stats, credentials)
        path, table = fetch_stations(
            client, region, start, end, settings, staging, selection.network, selection.station
        )
        problems += client.problems
        if path is None or table.empty:
            continue
        docs.append(path)
        tables.append(table.assign(provider=base))
    if not tables:
        return Metadata(events_path, catalog, None, pd.DataFrame(), stats.as_dict(), problems)
    channels = pd.concat(tables, ignore_index=True)
    # A station listed by several providers is fetched from the first that lists it.
    first = channels.drop_duplicates(["network", "station"])[["network", "station", "provider"]]
    channels = channels.drop(columns="provider").merge(first, on=["network", "station"])
    stations_path = docs[0] if len(docs) == 1 else _merged_inventory(docs, staging)
    return Metadata(events_path, catalog, stations_path, channels, stats.as_dict(), problems)


def _around(catalog: pd.DataFrame, region: Region) -> Region:
    """The box around the catalogue's epicentres (or ``region`` when it is a circle)."""
    if region.maxradius is not None or catalog.empty:
        return region
    lat = catalog["latitude"].astype(float).dropna()
    lon = catalog["longitude"].astype(float).dropna()
    if lat.empty or lon.empty:
        return region
    return Region(float(lat.min()), float(lat.max()), float(lon.min()), float(lon.max()))


def _merged_inventory(docs: Sequence[Path], staging: Path) -> Path:
    """One StationXML for the ingest when several providers answered (each kept verbatim)."""
    inv = obspy.Inventory(networks=[], source="seismoflow")
    for doc in docs:
        inv += obspy.read_inventory(str(doc), format="STATIONXML")
    buf = io.BytesIO()
    inv.write(buf, format="STATIONXML")
    return _stage_document(staging / "stations", "merged", buf.getvalue())


@dataclass(frozen=True)
class Request:
    """One dataselect request to make: a provider and its lines."""

    provider: str
    lines: tuple[BulkLine, ...]


def plan_requests(
    meta: Metadata, selection: Selection, settings: Settings, ledger: pd.DataFrame
) -> tuple[list[Request], int]:
    """Requests for what is still missing, and how many lines were already answered.

    Called in rounds: a station whose best channel set had no data at all gets its next set
    in the following round (see :func:`seismoflow.fdsn.select.next_lines`).
    """
    if meta.channels.empty:
        return [], 0
    status = ledger_status(ledger)
    requests: list[Request] = []
    answered = 0
    for provider, channels in meta.channels.groupby("provider", sort=True):
        if selection.continuous:
            candidates = continuous_candidates(
                channels, settings.channel_priority, selection.start_ns, selection.end_ns
            )
        else:
            candidates = event_candidates(
                meta.catalog,
                channels,
                settings.channel_priority,
                settings.max_distance_deg,
                settings.window_pre_s,
                settings.window_post_s,
                settings.window_reference,
            )
        todo, done = next_lines(candidates, str(provider), status)
        answered += done
        for group in batches(todo, settings.fetch_max_lines, by_event=not selection.continuous):
            requests.append(Request(str(provider), tuple(group)))
    return requests, answered


def fetch_requests(
    location: str,
    requests: Sequence[Request],
    settings: Settings,
    staging: Path,
    credentials: Credentials | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Make ``requests`` (one task's share); stage files, then record the ledger rows."""
    stats = FetchStats()
    clients: dict[str, PoliteClient] = {}
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for req in requests:
        if req.provider not in clients:
            clients[req.provider] = make_client(
                req.provider, settings, stats, credentials, discover=False
            )
        result = fetch_batch(
            clients[req.provider],
            req.provider,
            req.lines,
            settings,
            staging,
            settings.channel_priority,
            log=log,
        )
        rows += result.rows
        problems += result.problems
    record_lines(location, rows)
    failed = [r for r in rows if r["status"] == STATUS_FAILED]
    if failed:
        record_fetch_problems(location, failed)
    return {"stats": stats.as_dict(), "problems": problems, "lines": len(rows)}


def record_fetch_problems(location: str, failed: Sequence[dict[str, Any]]) -> None:
    """Failed lines go to the quarantine table too (with the request and the reason)."""
    from seismoflow.archive.ingest import record_problems
    from seismoflow.archive.sources import Problem

    problems = [
        Problem(
            f"{r['provider']} dataselect",
            f"request failed after retries: {r['note']}; a re-run asks again",
            f"{r['network']}.{r['station']}.{r['location']}.{r['channel']}",
            int(r["start_ns"]),
        )
        for r in failed
    ]
    record_problems(location, problems, "fetch")
