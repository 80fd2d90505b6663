"""FDSN fetch against the local FDSN service over the real archive (``tests/fdsnws``).

The whole archive is fetched through HTTP with ObsPy's real client and compared with the
archive ingest of the same files; faults, kills, re-runs and restricted data run on the 2022
events (20 events, a few hundred request lines) to keep the suite short. One clean fetch of
2022 is ingested as the reference; the fault tests compare what the client downloaded (the
staged miniSEED bytes and the request ledger) with that fetch's, since the ingest of the same
bytes is the same (``test_killed_fetch_resumes`` and the whole-archive tests still ingest).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from seismoflow.flows.fetch import run_fetch
from seismoflow.storage.continuous import ContinuousReader
from seismoflow.storage.location import open_root
from seismoflow.storage.tables import read_table

from seismoflow.fdsn.run import Selection
from seismoflow.ids import ChannelId
from seismoflow.settings import Settings
from seismoflow.times import to_ns
from tests.conftest import cli_env, run_cli, seismoflow_cmd
from tests.fdsnws import Faults, FDSNService

pytestmark = [pytest.mark.slow, pytest.mark.data]

YEAR_2022 = Selection(to_ns("2022-01-01"), to_ns("2023-01-01"))
MAX_DISTANCE = "0.6"  # every station of the archive lies within 0.5 degrees of its events


@pytest.fixture(scope="module")
def service(archive: Path) -> Iterator[FDSNService]:
    with FDSNService(archive) as svc:
        yield svc


@pytest.fixture(autouse=True)
def clean_faults(service: FDSNService, request: pytest.FixtureRequest) -> Iterator[None]:
    """No faults, and fault draws seeded by the test's name, not by the tests before it."""
    service.faults = Faults()
    service.reseed(zlib.crc32(request.node.nodeid.encode()))
    yield
    service.faults = Faults()


@pytest.fixture
def download_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """``run_fetch`` stops after the downloads: staged files and ledger, no ingest."""
    import seismoflow.flows.fetch as fetch_flow

    monkeypatch.setattr(fetch_flow.ingest_tasks, "ingest_steps", lambda *_, **__: {})
    monkeypatch.setattr(fetch_flow.ingest_tasks, "publish_ingest", lambda *_: None)


def settings_for(store: Path, service: FDSNService, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "store": str(store),
        "fdsn_url": [service.url],
        "max_distance_deg": float(MAX_DISTANCE),
        "fetch_backoff_s": 0.05,
        "fetch_backoff_cap_s": 1.0,
        "fetch_timeout_s": 20.0,
        "fetch_attempts": 8,
        "max_workers": 2,
    }
    values.update(extra)
    return Settings(**values)


def fetch_args(service: FDSNService, store: Path, start: str, end: str) -> list[str]:
    return [
        "fetch", "--fdsn-url", service.url, "--start", start, "--end", end,
        "--max-distance", MAX_DISTANCE, "--store", str(store), "--json",
    ]  # fmt: skip


def windows(store: Path) -> dict[str, tuple[np.ndarray, int, str]]:
    """Event windows by trace key: (waveform, flags, channels)."""
    ds = xr.open_zarr(store, group="events", consolidated=False)
    keys = ds["trace_key"].values.astype(object)
    wave = ds["waveform"].values
    flags = ds["flags"].values
    chans = ds["channels"].values.astype(object)
    return {str(k): (wave[i], int(flags[i]), str(chans[i])) for i, k in enumerate(keys)}


def assert_same_windows(a: Path, b: Path) -> None:
    wa, wb = windows(a), windows(b)
    assert sorted(wa) == sorted(wb)
    for key, (wave, flags, chans) in wa.items():
        assert np.array_equal(wave, wb[key][0], equal_nan=True), key
        assert (flags, chans) == wb[key][1:], key


def downloaded(store: Path) -> tuple[dict[str, bytes], dict[tuple[Any, ...], tuple[Any, ...]]]:
    """What a fetch into ``store`` downloaded: staged files (name -> bytes) and the ledger
    (line -> status, bytes, file, event; the last row of a line asked twice)."""
    staged = Path(f"{store}.fetch") / "waveforms"
    files = {str(p.relative_to(staged)): p.read_bytes() for p in sorted(staged.rglob("*.mseed"))}
    ledger = read_table(str(store), "fetch_requests").sort_values("fetched_at_ns", kind="stable")
    cols = ["provider", "network", "station", "location", "channel", "start_ns", "end_ns"]
    lines = {
        tuple(str(v) for v in row[: len(cols)]): tuple(str(v) for v in row[len(cols) :])
        for row in ledger[[*cols, "status", "bytes", "file", "event_id"]].itertuples(index=False)
    }
    return files, lines


def assert_same_download(store: Path, reference: Path) -> None:
    """``store``'s fetch staged the same bytes and recorded the same ledger as ``reference``'s."""
    files, lines = downloaded(store)
    ref_files, ref_lines = downloaded(reference)
    assert ref_files and ref_lines
    assert sorted(files) == sorted(ref_files)
    for name, content in files.items():
        assert content == ref_files[name], name
    assert lines == ref_lines


def assert_same_continuous(a: Path, b: Path) -> None:
    """Every stretch of samples stored in ``a`` is stored identically in ``b``."""
    days_a = read_table(str(a), "channel_days")
    ra, rb = ContinuousReader(open_root(str(a), "r")), ContinuousReader(open_root(str(b), "r"))
    for row in days_a.itertuples(index=False):
        ch = ChannelId.parse(str(row.channel))
        for piece in ra.pieces(ch, int(row.first_ns), int(row.last_ns)):
            end = piece.start_ns + round((len(piece.data) - 1) * 1e9 / piece.sampling_rate)
            other = rb.pieces(ch, piece.start_ns, end)
            assert [p.start_ns for p in other] == [piece.start_ns], (row.channel, row.day_ns)
            assert np.array_equal(other[0].data, piece.data), (row.channel, row.day_ns)


# --- the whole archive over HTTP --------------------------------------------------------------


@pytest.fixture(scope="module")
def fetched_archive(
    service: FDSNService, prefect_server: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    """The whole archive fetched in this process (the flow the command runs; the command
    itself is run by the kill and credential tests below)."""
    store = tmp_path_factory.mktemp("fetch-all") / "store.zarr"
    selection = Selection(to_ns("2002-01-01"), to_ns("2025-01-01"))
    return store, run_fetch(settings_for(store, service), selection)


def test_fetch_equals_archive_ingest(
    fetched_archive: tuple[Path, dict[str, Any]], archive_store: tuple[Path, dict[str, Any]]
) -> None:
    fetched, summary = fetched_archive
    archive, _ = archive_store
    assert summary["failed_requests"] == 0 and summary["problems"] == []
    # Same events.
    cat_f, cat_a = read_table(str(fetched), "catalog"), read_table(str(archive), "catalog")
    assert sorted(cat_f["event_id"]) == sorted(cat_a["event_id"])
    assert summary["events"] == len(cat_a) == 214
    # Same traces: a window for every (event, station) of the archive whose station the
    # station service knows (the 56 stations without any metadata cannot be found through
    # fdsnws-station). The archive holds several channel sets at 12 (event, station) pairs;
    # a fetch takes one set per station, by priority, falling back to the next set when a
    # set has no data.
    wf, wa = windows(fetched), windows(archive)
    known = read_table(str(fetched), "channels")
    known_stations = {f"{n}.{s}" for n, s in zip(known["network"], known["station"], strict=True)}

    def event_station(key: str) -> tuple[str, str]:
        event, codes = key.split("|")
        return event, ".".join(codes.split(".")[:2])

    wanted = {event_station(k) for k in wa if event_station(k)[1] in known_stations}
    assert sorted(event_station(k) for k in wf) == sorted(wanted)  # one set per pair
    assert set(wf) <= set(wa)
    assert len(wanted) > 1200
    # Same samples, flags and components for each of them.
    for key in wf:
        assert np.array_equal(wf[key][0], wa[key][0], equal_nan=True), key
        assert wf[key][1:] == wa[key][1:], key
    # And the continuous samples the fetch stored are the archive's.
    assert_same_continuous(fetched, archive)
    assert summary["ingest"].get("units_failed", 0) == 0
    assert summary["traces"] > 0 and summary["waveform_bytes"] > 0
    assert summary["lines_no_data"] > 0  # stations near an event that did not record it


# --- faults, kills, restricted data on the 2022 events ---------------------------------------


@pytest.fixture(scope="module")
def clean_2022(
    service: FDSNService, prefect_server: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    store = tmp_path_factory.mktemp("fetch-2022") / "store.zarr"
    service.faults = Faults()
    summary = run_fetch(settings_for(store, service), YEAR_2022)
    assert summary["retried"] == 0 and summary["lines_with_data"] > 100
    return store, summary


def test_rerun_makes_no_waveform_requests(
    service: FDSNService, clean_2022: tuple[Path, dict[str, Any]], prefect_server: str
) -> None:
    """A second fetch of what a store holds asks no waveforms and writes nothing (the 2022
    events; it used to re-run the whole archive's fetch, the same skip at 10x the cost)."""
    store, first = clean_2022
    before = windows(store)
    files, lines = downloaded(store)
    service.reset_log()
    summary = run_fetch(settings_for(store, service), YEAR_2022)
    assert service.count(service="dataselect") == 0
    assert summary["requests_by_service"].get("dataselect", 0) == 0
    assert summary["lines_skipped_done"] == first["lines_planned"]
    assert summary["ingest"].get("units_written", 0) == 0
    after = windows(store)
    assert sorted(after) == sorted(before)
    assert downloaded(store) == (files, lines)


FAULTS = {
    "unavailable": Faults(unavailable=0.3, retry_after=1),
    "too_many": Faults(too_many=0.3, retry_after=1),
    "truncate": Faults(truncate=0.3),
    "reset": Faults(reset=0.3),
    "mixed": Faults(unavailable=0.1, too_many=0.05, truncate=0.05, reset=0.05, slow=0.05,
                    slow_seconds=3, retry_after=1, services=("dataselect", "station", "event")),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_faults_give_the_clean_store(
    name: str,
    service: FDSNService,
    clean_2022: tuple[Path, dict[str, Any]],
    prefect_server: str,
    tmp_path: Path,
    download_only: None,
) -> None:
    service.faults = FAULTS[name]
    service.reset_log()
    store = tmp_path / "store.zarr"
    summary = run_fetch(settings_for(store, service, fetch_timeout_s=2.0), YEAR_2022)
    injected = [r for r in service.requests if r.fault]
    assert injected, "the service injected no fault"
    assert summary["retried"] >= len([r for r in injected if r.fault != "slow"])
    assert summary["failed_requests"] == 0 and summary["problems"] == []
    assert summary["lines_with_data"] == clean_2022[1]["lines_with_data"]
    assert_same_download(store, clean_2022[0])


def test_slow_answers_time_out_and_are_retried(
    service: FDSNService, clean_2022: tuple[Path, dict[str, Any]], tmp_path: Path,
    prefect_server: str, download_only: None,
) -> None:  # fmt: skip
    service.faults = Faults(slow=0.3, slow_seconds=4)
    store = tmp_path / "store.zarr"
    summary = run_fetch(settings_for(store, service, fetch_timeout_s=1.0), YEAR_2022)
    assert summary["retried_by_cause"].get("FDSNTimeoutException", 0) > 0
    assert_same_download(store, clean_2022[0])


def test_413_splits_requests(
    service: FDSNService, clean_2022: tuple[Path, dict[str, Any]], tmp_path: Path,
    prefect_server: str, download_only: None,
) -> None:  # fmt: skip
    service.faults = Faults(max_bulk_lines=10)
    store = tmp_path / "store.zarr"
    summary = run_fetch(settings_for(store, service), YEAR_2022)
    assert summary["split_413"] > 0 and summary["failed_requests"] == 0
    assert_same_download(store, clean_2022[0])


def test_killed_fetch_resumes(
    service: FDSNService, clean_2022: tuple[Path, dict[str, Any]], tmp_path: Path,
    prefect_server: str,
) -> None:  # fmt: skip
    store = tmp_path / "store.zarr"
    service.faults = Faults(slow=0.5, slow_seconds=0.5)
    service.reset_log()
    args = [*seismoflow_cmd(), *fetch_args(service, store, "2022-01-01", "2023-01-01")]
    proc = subprocess.Popen(
        args, env=cli_env(prefect_server), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while service.count(service="dataselect") < 6 and proc.poll() is None:
        assert time.monotonic() < deadline, "the fetch made no waveform requests"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    ledger = read_table(str(store), "fetch_requests")
    done_before = len(ledger)
    service.faults = Faults()
    service.reset_log()
    summary = run_fetch(settings_for(store, service), YEAR_2022)
    assert summary["lines_skipped_done"] == done_before  # nothing written was asked again
    assert (
        summary["lines_skipped_done"] + summary["lines_with_data"] + summary["lines_no_data"]
        == clean_2022[1]["lines_planned"]
    )
    assert_same_windows(store, clean_2022[0])
    assert_same_continuous(store, clean_2022[0])


def _everything_said(prefect_server: str, flow_run_ids: list[str]) -> str:
    """Parameters, logs and artifacts of flow runs (and their subflows), as one string."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )

    chunks: list[str] = []
    with get_client(sync_client=True) as client:
        ids = list(flow_run_ids)
        subs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=ids)  # type: ignore[arg-type]
            )
        )
        ids += [str(r.id) for r in subs]
        for fid in ids:
            run = client.read_flow_run(fid)  # type: ignore[arg-type]
            chunks.append(json.dumps(run.parameters, default=str))
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)))  # type: ignore[arg-type]
        chunks += [log.message for log in logs]
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids))  # type: ignore[arg-type]
        )
        chunks += [json.dumps(a.data, default=str) for a in arts]
        assert logs and arts
    return "\n".join(chunks)


def test_restricted_data_and_secrets(
    service: FDSNService, prefect_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    download_only: None,
) -> None:  # fmt: skip
    password = "pw-" + secrets.token_hex(12)
    service.faults = Faults(restricted=("UW",), user="alice", password=password)
    open_store = tmp_path / "open.zarr"
    run_fetch(settings_for(open_store, service), YEAR_2022)  # without credentials
    files, lines = downloaded(open_store)
    assert files and not any(name.startswith("UW/") for name in files)
    assert not any(key[1] == "UW" and value[0] == "data" for key, value in lines.items())

    monkeypatch.setenv("SEISMOFLOW_FDSN_USER", "alice")
    monkeypatch.setenv("SEISMOFLOW_FDSN_PASSWORD", password)
    store = tmp_path / "auth.zarr"
    started = time.time()
    proc = run_cli(fetch_args(service, store, "2022-01-01", "2023-01-01"), prefect_server)
    summary = json.loads(proc.stdout)
    assert any(k.split("|")[1].startswith("UW.") for k in windows(store))
    # The secret is nowhere: not in output, flow parameters, logs, artifacts, store or cache.
    assert password not in proc.stdout + proc.stderr
    needle = password.encode()
    for folder in (store, Path(summary["staging"])):
        for path in folder.rglob("*"):
            if path.is_file():
                assert needle not in path.read_bytes(), path
    from datetime import UTC, datetime

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                start_time=FlowRunFilterStartTime(after_=datetime.fromtimestamp(started - 5, UTC))
            ),
            limit=200,
        )
    ids = [
        str(r.id)
        for r in runs
        if (r.parameters.get("settings") or {}).get("store") == str(store)
        and not r.parent_task_run_id
    ]
    assert ids, "the fetch's flow run is not on the server"
    deadline = time.monotonic() + 60
    said = ""
    while time.monotonic() < deadline:  # logs reach the server asynchronously
        said = _everything_said(prefect_server, ids)
        # the flow's last stage line ("fetch: N requests ... lines with data ...") is logged
        if "lines with data" in said and "credentials: user/password" in said:
            break
        time.sleep(1)
    assert "lines with data" in said and "credentials: user/password" in said
    assert password not in said


def test_continuous_station_days(
    service: FDSNService,
    archive_store: tuple[Path, dict[str, Any]],
    tmp_path: Path,
    prefect_server: str,
) -> None:
    store = tmp_path / "store.zarr"
    selection = Selection(
        to_ns("2022-01-02"), to_ns("2022-01-03"), network="CI", station="CCA,HEC",
        continuous=True,
    )  # fmt: skip
    summary = run_fetch(settings_for(store, service, channel_priority=["BH?"]), selection)
    assert summary["events"] == 0 and summary["lines_with_data"] == 2  # the two BHN days
    days = read_table(str(store), "channel_days")
    assert sorted(days["channel"]) == ["CI.CCA..BHN", "CI.HEC..BHN"]
    assert (days["n_samples"].astype(int) == 3_456_000).all()
    assert_same_continuous(store, archive_store[0])
    again = run_fetch(settings_for(store, service, channel_priority=["BH?"]), selection)
    assert again["requests_by_service"].get("dataselect", 0) == 0


def test_credentials_from_a_prefect_secret_block(prefect_server: str) -> None:
    from prefect.blocks.system import Secret

    from seismoflow.fdsn.credentials import resolve_credentials

    name = "seismoflow-test-" + secrets.token_hex(4)
    Secret(value="alice:" + "s3cret-value").save(name)
    creds = resolve_credentials(Settings(fdsn_secret_block=name), environ={})
    assert creds.kind == "user/password"
    assert creds.client_kwargs() == {"user": "alice", "password": "s3cret-value"}
    assert "s3cret" not in repr(creds)
