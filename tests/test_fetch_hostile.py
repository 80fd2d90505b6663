"""A hostile or broken data centre (issue 13): its answers are input and validated like files.

The local FDSN service over the real archive (``tests/fdsnws``) answers badly on purpose:
station codes that are paths, a redirect to another server, an answer trickled a byte at a
time, a huge answer and a gzip bomb. The fetch steps run as plain functions (no Prefect):
metadata, plan, dataselect requests into staging and the ledger in the store. Four events
of February 2022 make four dataselect requests (one per event).
"""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from seismoflow.fdsn import run
from seismoflow.fdsn.client import redirect_allowed
from seismoflow.fdsn.select import BulkLine
from seismoflow.settings import Settings
from seismoflow.times import to_ns
from tests.fdsnws import Faults, FDSNService

pytestmark = pytest.mark.data

FEBRUARY_2022 = run.Selection(to_ns("2022-02-01"), to_ns("2022-02-20"))
# Events of FEBRUARY_2022 with data: two share the CN/PB stations, one has UW stations.
CN_EVENTS = {"smi:local/pnsn/uw61813976", "smi:local/pnsn/uw61817771"}
UW_EVENT = "smi:local/pnsn/uw61817556"
MiB = 1 << 20


@pytest.fixture(scope="module")
def service(archive: Path) -> Iterator[FDSNService]:
    with FDSNService(archive) as svc:
        yield svc


@pytest.fixture(autouse=True)
def clean_faults(service: FDSNService) -> Iterator[None]:
    service.faults = Faults()
    service.reset_log()
    yield
    service.faults = Faults()


@dataclass
class Fetched:
    store: Path
    staging: Path
    meta: run.Metadata
    out: dict[str, Any]
    ledger: pd.DataFrame
    peak_bytes: int  # tracemalloc peak while the dataselect requests ran (-1: not traced)


def fetch(service: FDSNService, work: Path, *, trace: bool = False, **extra: Any) -> Fetched:
    """Metadata, plan and dataselect requests of FEBRUARY_2022 into ``work/store.zarr``;
    with ``trace``, the requests run under tracemalloc (slower: the service runs here too)."""
    values: dict[str, Any] = {
        "store": str(work / "store.zarr"),
        "fdsn_url": [service.url],
        "max_distance_deg": 0.6,
        "fetch_backoff_s": 0.01,
        "fetch_backoff_cap_s": 0.05,
        "fetch_attempts": 2,
        **extra,
    }
    settings = Settings(**values)
    staging = run.staging_folder(settings)
    meta = run.fetch_metadata(FEBRUARY_2022, settings, staging)
    requests, _ = run.plan_requests(meta, FEBRUARY_2022, settings, run.read_ledger(settings.store))
    if trace:
        tracemalloc.start()
    try:
        out = run.fetch_requests(settings.store, requests, settings, staging)
        peak = tracemalloc.get_traced_memory()[1] if trace else -1
    finally:
        if trace:
            tracemalloc.stop()
    return Fetched(Path(settings.store), staging, meta, out, run.read_ledger(settings.store), peak)


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def assert_nothing_outside(work: Path, fetched: Fetched) -> None:
    """Every file under ``work`` lies in the store or in staging's documents and waveforms,
    the latter only as ``waveforms/NET/STA/NET.STA...`` with valid codes."""
    for path in files_under(work):
        rel = path.relative_to(work)
        if rel.parts[0] in (fetched.store.name, f".{fetched.store.name}.lock"):
            continue
        assert rel.parts[0] == fetched.staging.name, path
        kind = rel.parts[1]
        assert kind in ("events", "stations", "waveforms"), path
        if kind == "waveforms":
            net, sta, name = rel.parts[2:]
            assert name.startswith(f"{net}.{sta}."), path
            assert ".." not in (net, sta), path


def status_by_event(ledger: pd.DataFrame) -> dict[str, set[str]]:
    return {str(e): set(g["status"]) for e, g in ledger.groupby("event_id")}


def test_clean_service_fetches_three_events(service: FDSNService, tmp_path: Path) -> None:
    """The baseline the hostile cases are compared with."""
    fetched = fetch(service, tmp_path)
    status = status_by_event(fetched.ledger)
    assert "data" in status[UW_EVENT]
    assert all("data" in status[e] for e in CN_EVENTS)
    assert "failed" not in set(fetched.ledger["status"])
    assert_nothing_outside(tmp_path, fetched)


HOSTILE = (("GOBB", ".."), ("PGC", "../../tmp"), ("SYMB", "../" * 12 + "tmp"))


def test_station_codes_that_are_paths_name_nothing(service: FDSNService, tmp_path: Path) -> None:
    work = tmp_path / "work"
    before_tmp = set(Path("/tmp").glob("*.mseed")) | set(Path("/tmp").glob("*/*.mseed"))
    service.faults = Faults(hostile_stations=HOSTILE)
    fetched = fetch(service, work)
    # Each hostile code is refused with the provider and the code named.
    for _, code in HOSTILE:
        assert any(repr(code) in p and "refused" in p for p in fetched.meta.problems), code
    assert not set(fetched.meta.channels["station"]) & {code for _, code in HOSTILE}
    assert fetched.meta.stats["channels_invalid_codes"] >= len(HOSTILE)
    # The rest goes on: the other stations of the same events are fetched.
    staged = {p.parent.name for p in files_under(fetched.staging / "waveforms")}
    assert "VGZ" in staged and "BERY" in staged
    assert not staged & {"GOBB", "PGC", "SYMB"}
    assert_nothing_outside(work, fetched)
    assert files_under(tmp_path) == files_under(work)  # nothing beside the work folder
    after_tmp = set(Path("/tmp").glob("*.mseed")) | set(Path("/tmp").glob("*/*.mseed"))
    assert not {p for p in after_tmp - before_tmp if "pnsn" in p.name}


def test_invalid_record_codes_and_escaping_names_are_refused(tmp_path: Path) -> None:
    """Records whose codes break the rules are dropped (a ``HH?`` line matches ``HH.``);
    a staged name that resolves outside its folder is refused before anything is written."""
    line = BulkLine("CN", "VGZ", "", "HH?", 0, 10**9, "smi:local/x")
    good = run.Record("CN", "VGZ", "", "HHZ", 0, 10**9, 0, 8)
    bad = run.Record("CN", "VGZ", "", "HH.", 0, 10**9, 8, 8)
    stats = run.FetchStats()
    result = run._stage([good, bad], b"A" * 8 + b"B" * 8, [line], "p", tmp_path, [], stats)
    assert result.problems and "'HH.'" in result.problems[0]
    (written,) = result.files
    assert (tmp_path / "waveforms" / written).read_bytes() == b"A" * 8
    for name in ("../x", "a/../../x", "/tmp/x", "CN/" + "../" * 5 + "tmp/x"):
        with pytest.raises(run.FetchError, match="outside the staging folder"):
            run.inside(tmp_path / "waveforms", name)


def test_redirects_leave_no_origin() -> None:
    base = "https://service.example.org/fdsnws/dataselect/1/query"
    assert redirect_allowed(base, "https://service.example.org/other/query")
    assert redirect_allowed(base, "https://SERVICE.example.org:443/q")
    assert not redirect_allowed(base, "http://service.example.org/q")  # downgrade
    assert not redirect_allowed(base, "https://evil.example.org/q")
    assert not redirect_allowed(base, "https://service.example.org:8443/q")
    assert not redirect_allowed("http://127.0.0.1:8080/q", "http://127.0.0.1:8081/q")


class _OtherHost(BaseHTTPRequestHandler):
    """Another server: it answers anything with miniSEED of other samples, and counts."""

    protocol_version = "HTTP/1.1"
    hits: list[str] = []
    body = b""

    def _answer(self) -> None:
        _OtherHost.hits.append(self.command + " " + self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_GET = do_POST = _answer  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def test_redirect_to_another_host_is_refused(
    service: FDSNService, archive: Path, tmp_path: Path
) -> None:
    _OtherHost.hits = []
    _OtherHost.body = next((archive / "sds" / "2022" / "UW").rglob("*.D.*")).read_bytes()
    other = ThreadingHTTPServer(("127.0.0.1", 0), _OtherHost)
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    try:
        target = f"http://127.0.0.1:{other.server_address[1]}"
        service.faults = Faults(redirect=target)
        fetched = fetch(service, tmp_path)
    finally:
        other.shutdown()
        other.server_close()
    assert _OtherHost.hits == []  # no request (and no POST body) went to the other host
    assert set(fetched.ledger["status"]) == {"failed"}
    notes = set(fetched.ledger["note"])
    assert all("RedirectRefused" in n and f"{target}/fdsnws/dataselect/1/query" in n
               for n in notes)  # fmt: skip
    assert not (fetched.staging / "waveforms").exists()
    assert_nothing_outside(tmp_path, fetched)


@pytest.mark.parametrize("headers", [False, True], ids=["body", "endless_headers"])
def test_trickled_answer_ends_at_the_deadline(
    service: FDSNService, tmp_path: Path, headers: bool
) -> None:
    """GOBB's requests (the two CN events) trickle, their body or an endless header line a
    byte at a time (each byte well within ``fetch_timeout_s``); they fail after their
    retries, each try ended by ``fetch_deadline_s``, and the other events' data is staged
    and recorded."""
    service.faults = Faults(trickle_seconds=0.05, trickle_headers=headers, targets=("GOBB",))
    fetched = fetch(service, tmp_path, fetch_deadline_s=2.0)
    status = status_by_event(fetched.ledger)
    for event in CN_EVENTS:
        assert status[event] == {"failed"}, event
    notes = fetched.ledger.loc[fetched.ledger["event_id"].isin(CN_EVENTS), "note"]
    assert all("deadline of 2 s" in n for n in notes)
    assert fetched.out["stats"]["retried"] == len(CN_EVENTS)  # retried once, like a timeout
    assert "data" in status[UW_EVENT]
    staged = {p.parent.name for p in files_under(fetched.staging / "waveforms")}
    assert {"BERY", "DONK"} <= staged and not staged & {"GOBB", "VGZ"}
    assert service.count(fault="trickle") == 2 * len(CN_EVENTS)
    assert_nothing_outside(tmp_path, fetched)


@pytest.mark.parametrize(
    ("faults", "reason"),
    [
        (Faults(huge_bytes=128 * MiB, targets=("BERY",)), "sent more than"),
        (Faults(gzip_bomb_bytes=128 * MiB, targets=("BERY",)), "inflates (gzip) to more than"),
    ],
    ids=["huge", "gzip_bomb"],
)
def test_huge_and_compressed_answers_keep_memory_bounded(
    service: FDSNService, tmp_path: Path, faults: Faults, reason: str
) -> None:
    """A 128 MiB answer (no Content-Length) and a gzip body inflating to 128 MiB fail at the
    request's cap (here 1x the expected bytes, about 4 MiB); the fetch's traced peak stays a
    small fraction of the answer, and the other events are fetched."""
    service.faults = faults
    fetched = fetch(
        service, tmp_path, trace=True, fetch_answer_factor=1.0, fetch_answer_floor_bytes=4 * MiB
    )
    status = status_by_event(fetched.ledger)
    assert status[UW_EVENT] == {"failed"}
    notes = fetched.ledger.loc[fetched.ledger["event_id"] == UW_EVENT, "note"]
    assert all("AnswerTooLarge" in n and reason in n for n in notes)
    assert fetched.out["stats"]["answers_too_large"] == 1  # final: not retried
    assert all("data" in status[e] for e in CN_EVENTS)
    assert fetched.peak_bytes < 128 * MiB // 8, fetched.peak_bytes
    assert_nothing_outside(tmp_path, fetched)


def test_expected_bytes_scale_the_cap() -> None:
    hour = 3600 * 10**9
    one = BulkLine("UW", "BERY", "", "HHZ", 0, hour)
    three = BulkLine("UW", "BERY", "", "HH?", 0, hour)
    assert run.expected_bytes([one]) == 3600 * 100 * 2
    assert run.expected_bytes([three]) == 3 * run.expected_bytes([one])
    settings = Settings(fetch_answer_factor=20, fetch_answer_floor_bytes=MiB)
    assert run.answer_cap([three], settings) == 20 * run.expected_bytes([three])
    short = BulkLine("UW", "BERY", "", "LHZ", 0, 10**9)
    assert run.answer_cap([short], settings) == MiB  # the floor


@pytest.mark.slow
def test_fetch_flow_stores_the_other_events_past_a_trickle(
    service: FDSNService, prefect_server: str, tmp_path: Path
) -> None:
    """The whole fetch flow (metadata, waveforms, ingest) against an endless trickle for the
    CN/PB requests: the run ends, reports the failed lines, and the UW event's windows are
    in the store while the trickled events' are not."""
    from seismoflow.flows.fetch import run_fetch
    from seismoflow.storage.events import trace_keys
    from seismoflow.storage.location import open_root

    service.faults = Faults(trickle_seconds=0.05, trickle_headers=True, targets=("GOBB",))
    store = tmp_path / "store.zarr"
    settings = Settings(
        store=str(store), fdsn_url=[service.url], max_distance_deg=0.6, fetch_attempts=2,
        fetch_backoff_s=0.01, fetch_backoff_cap_s=0.05, fetch_deadline_s=2.0,
    )  # fmt: skip
    summary = run_fetch(settings, FEBRUARY_2022)
    assert summary["failed_requests"] == len(CN_EVENTS)
    assert any("deadline of 2 s" in p for p in summary["problems"])
    events = {key.split("|", 1)[0] for key in trace_keys(open_root(str(store), "r")["events"])}
    assert UW_EVENT in events
    assert not events & CN_EVENTS


@pytest.mark.slow
def test_fetch_flow_quarantines_channels_refused_for_their_codes(
    service: FDSNService, prefect_server: str, tmp_path: Path
) -> None:
    """Refused codes are bad input: the run goes on, and each refused channel is a row of the
    store's quarantine table with the reason, not only a line of the summary."""
    from seismoflow.flows.fetch import run_fetch
    from seismoflow.storage.tables import read_table

    service.faults = Faults(hostile_stations=HOSTILE)
    store = tmp_path / "work" / "store.zarr"
    settings = Settings(
        store=str(store), fdsn_url=[service.url], max_distance_deg=0.6, fetch_attempts=2,
        fetch_backoff_s=0.01, fetch_backoff_cap_s=0.05,
    )  # fmt: skip
    summary = run_fetch(settings, FEBRUARY_2022)
    assert summary["ingest"]["units_written"] > 0  # the other stations are stored
    quarantine = read_table(str(store), "quarantine")
    refused = quarantine[quarantine["source"] == "fdsnws-station"]
    for _, code in HOSTILE:
        assert any(repr(code) in r and "refused" in r for r in refused["reason"]), code
    assert files_under(tmp_path) == files_under(tmp_path / "work")  # nothing beside it
