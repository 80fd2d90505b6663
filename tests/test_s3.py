"""The whole pipeline on object storage: ``--store s3://bucket/name.zarr`` on moto's S3 server
(tests/s3server.py) gives the same store as a local folder.

Real data, kept small: the archive's 2022 (192 day files, 20 labelled events, the least that
trains: a train, val and test side per class) runs ingest, features, train, predict and
export into a local store and into ``s3://``; a month of it is fetched from the local FDSN
service (tests/fdsnws) into both; the small subset of the mechanics tests
(``conftest.small_sds``) is ingested by two processes at once into one ``s3://`` store. The
steps run in this process through :mod:`seismoflow.api`; the ingest into ``s3://`` runs the
``seismoflow`` command, whose output and the store are checked for the credentials.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import obspy
import pandas as pd
import pytest
import xarray as xr

import seismoflow
from seismoflow.settings import Settings
from seismoflow.store import Store
from tests.conftest import cli_env, ingest_args

pytest_plugins = ["tests.s3server"]  # the moto server and bucket fixtures

pytestmark = [pytest.mark.slow, pytest.mark.data]

YEAR = ("2022-01-01T00:00:00", "2023-01-01T00:00:00")
TRAIN = {"epochs": 1, "trees": 20, "tsne": False, "seed": 0, "cv_seeds": (0,)}
# run-specific attributes and columns: equal stores differ in these only
RUN_VARIABLES = ("written_at",)
RUN_ATTRS = ("flow_run_id", "created_at", "code_version", "model_dir", "version", "run_id")


def settings(store: str, **extra: Any) -> Settings:
    return Settings(store=store, max_workers=2, **extra)


# --- comparing two stores through the public reading API ------------------------------------


def _frame(df: pd.DataFrame) -> pd.DataFrame:
    """A table in a canonical row order (writers on threads append in any order)."""
    if df.empty:
        return df.reset_index(drop=True)
    return df.sort_values(list(df.columns), kind="stable").reset_index(drop=True)


def _dataset(ds: xr.Dataset) -> xr.Dataset:
    """Windows or predictions without when and by which run they were written."""
    ds = ds.drop_vars([v for v in RUN_VARIABLES if v in ds.variables]).load()
    ds.attrs = {k: v for k, v in ds.attrs.items() if k not in RUN_ATTRS}
    return ds


def day_requests(sds: Path, start: str, end: str, most: int = 24) -> list[tuple[str, ...]]:
    """``get_waveforms`` arguments for SDS day files of ``sds`` between ``start`` and ``end``:
    days that hold data, at most ``most`` of them spread over the sorted list, the largest
    files (day-long records) always in. Reading whole years of every channel would read every
    empty day too, and today's reader costs several requests per channel-day on ``s3://``
    (the event and noise windows, compared whole, hold samples of every day)."""
    t0, t1 = obspy.UTCDateTime(start), obspy.UTCDateTime(end)
    files = []
    for path in sorted(sds.rglob("*.D.*")):
        year, doy = path.name.split(".")[-2:]
        if t0 <= obspy.UTCDateTime(year=int(year), julday=int(doy)) < t1:
            files.append(path)
    largest = sorted(files, key=lambda p: p.stat().st_size)[-4:]
    step = max(1, len(files) // most)
    chosen = sorted(set(files[::step][:most]) | set(largest))
    out = []
    for path in chosen:
        net, sta, loc, cha, _, year, doy = path.name.split(".")
        day = obspy.UTCDateTime(year=int(year), julday=int(doy))
        out.append((net, sta, loc, cha, str(day), str(day + 86400)))
    return out


def assert_same_store(got: str, expected: str, days: list[tuple[str, ...]]) -> None:
    """Samples (of the channel-days ``days``), tables and windows of ``got`` equal those of
    ``expected``."""
    a, b = seismoflow.open_store(got), seismoflow.open_store(expected)
    info_a, info_b = a.info(), b.info()
    for key in ("store", "location", "path"):
        info_a.pop(key, None), info_b.pop(key, None)
    assert info_a == info_b
    n_traces = 0
    for request in days:
        sa, sb = a.get_waveforms(*request), b.get_waveforms(*request)
        assert [(t.id, t.stats.starttime) for t in sa] == [(t.id, t.stats.starttime) for t in sb]
        for ta, tb in zip(sa, sb, strict=True):
            assert ta.stats.sampling_rate == tb.stats.sampling_rate, ta.id
            assert ta.data.dtype == tb.data.dtype and np.array_equal(ta.data, tb.data), ta.id
        n_traces += len(sb)
    assert n_traces > 0
    for name in ("catalog", "channels", "quarantine"):
        pd.testing.assert_frame_equal(_frame(getattr(a, name)), _frame(getattr(b, name)))
    for group in ("events", "noise"):
        try:
            wb = b.windows(group)
        except seismoflow.errors.StoreError:
            continue
        xr.testing.assert_identical(_dataset(a.windows(group)), _dataset(wb))


def assert_no_credentials(location: str, *texts: str) -> None:
    """Neither the store's objects (documents with their attributes, tables, chunks) nor
    ``texts`` (logs) hold the access key or the secret."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(location)
    fs.invalidate_cache()
    paths = fs.find(root)
    assert paths
    # the dummy credentials tests.s3server put in the environment
    keys = (os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
    secrets = tuple(k.encode() for k in keys)
    for path in paths:
        content = fs.cat_file(path)
        assert not any(s in content for s in secrets), f"credentials stored in {path}"
    for text in texts:
        assert not any(k in text for k in keys), "credentials in the logs"


def prefect_logs() -> str:
    """Every log line the session's Prefect server holds."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return "\n".join(log.message for log in client.read_logs(limit=200))


# --- the pipeline, once locally (the reference) and once on s3:// ----------------------------


@dataclass
class Chain:
    store: str
    model: Path
    trained: dict[str, Any]
    days: list[tuple[str, ...]]
    cli_output: str = ""


def run_chain(store: str, sds: Path, archive: Path, models: Path, prefect: str) -> Chain:
    """ingest (the CLI for s3://), features, train, predict; what they left."""
    if store.startswith("s3://"):
        args = ingest_args(archive, sds, store)  # type: ignore[arg-type]
        args += ["--start", YEAR[0], "--end", YEAR[1]]
        proc = subprocess.run(
            args, env=cli_env(prefect), capture_output=True, text=True, timeout=1200
        )
        assert proc.returncode == 0, proc.stderr[-5000:]
        output = proc.stdout + proc.stderr
    else:
        seismoflow.ingest(
            sds, stations=archive / "stations.xml.gz", events=archive / "events.xml",
            start=YEAR[0], end=YEAR[1], settings=settings(store),
        )  # fmt: skip
        output = ""
    seismoflow.features(store, settings=settings(store))
    trained = seismoflow.train(store, models, settings=settings(store), **TRAIN)  # type: ignore[arg-type]
    days = day_requests(sds, *YEAR)
    return Chain(store, Path(trained["model_dir"]), trained, days, output)


@pytest.fixture(scope="module")
def local_chain(
    archive: Path, prefect_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Chain:
    base = tmp_path_factory.mktemp("s3-reference")
    return run_chain(str(base / "store.zarr"), archive / "sds", archive, base / "models",
                     prefect_server)  # fmt: skip


@pytest.fixture(scope="module")
def s3_chain(
    archive: Path, prefect_server: str, s3_server: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Chain]:  # fmt: skip
    import s3fs

    s3fs.S3FileSystem().mkdir("chain")
    models = tmp_path_factory.mktemp("s3-models") / "models"
    yield run_chain("s3://chain/archive.zarr", archive / "sds", archive, models, prefect_server)


def _training(summary: dict[str, Any]) -> dict[str, Any]:
    """A train summary without what differs between runs (paths, ids, times)."""
    drop = {"seconds", "flow_run_id", "plots", "model_dir", "model_id"}
    return {k: v for k, v in summary.items() if k not in drop}


@pytest.mark.timeout(2400)
def test_pipeline_on_s3_equals_local(local_chain: Chain, s3_chain: Chain) -> None:
    """ingest, features, train, predict and export on s3:// give what they give locally."""
    assert_same_store(s3_chain.store, local_chain.store, s3_chain.days)
    # training read the same examples and features, with the same seed: the same models
    assert _training(s3_chain.trained) == _training(local_chain.trained)

    # one model predicts on both stores: the same predictions, the same exports
    from seismoflow.models.predict import export_table

    for chain in (local_chain, s3_chain):
        seismoflow.predict(chain.store, local_chain.model, tsne=False,
                           settings=settings(chain.store))  # fmt: skip
    pa = seismoflow.open_store(s3_chain.store).predictions()
    pb = seismoflow.open_store(local_chain.store).predictions()
    assert pb.sizes["trace"] > 0
    xr.testing.assert_identical(_dataset(pa), _dataset(pb))
    for per_trace in (False, True):
        pd.testing.assert_frame_equal(
            export_table(s3_chain.store, per_trace=per_trace),
            export_table(local_chain.store, per_trace=per_trace),
        )
    # one catalogued event's windows, exported (prediction events also hold noise windows)
    event = str(seismoflow.open_store(local_chain.store).catalog["event_id"].iloc[0])
    got, expected = (
        Store(s3_chain.store).event_waveforms(event),
        Store(local_chain.store).event_waveforms(event),
    )
    assert len(expected) > 0 and [tr.id for tr in got] == [tr.id for tr in expected]
    assert all(np.array_equal(a.data, b.data) for a, b in zip(got, expected, strict=True))

    assert_no_credentials(s3_chain.store, s3_chain.cli_output, prefect_logs())


# --- fetch ------------------------------------------------------------------------------------

FETCH_MONTH = ("2022-02-01T00:00:00", "2022-03-01T00:00:00")


def test_fetch_into_s3_equals_local(
    archive: Path,
    prefect_server: str,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    """A fetch from the local FDSN service into s3:// (staging in a local --cache folder)
    stores what the same fetch stores locally."""
    from seismoflow.flows.fetch import run_fetch

    from seismoflow.fdsn.run import Selection
    from seismoflow.times import to_ns
    from tests.fdsnws import FDSNService

    selection = Selection(to_ns(FETCH_MONTH[0]), to_ns(FETCH_MONTH[1]))
    remote = f"s3://{s3_bucket}/fetched.zarr"
    local = str(tmp_path / "fetched.zarr")
    with FDSNService(archive) as service:
        common = {"fdsn_url": [service.url], "max_distance_deg": 0.6, "fetch_backoff_s": 0.05}
        summaries = [
            run_fetch(settings(local, **common), selection),
            run_fetch(settings(remote, fetch_cache=str(tmp_path / "cache"), **common), selection),
        ]
    assert summaries[0].get("events", 1) == summaries[1].get("events", 1)
    assert_same_store(remote, local, day_requests(archive / "sds", *FETCH_MONTH))


# --- two writers on one s3:// store -----------------------------------------------------------


def test_concurrent_ingests_into_one_s3_store(
    archive: Path, small_sds: Path, small_store: tuple[Path, dict[str, Any]],
    prefect_server: str, s3_bucket: str,
) -> None:  # fmt: skip
    """Two processes ingest the same days into one s3:// store at once (the store lock is
    the lock object in the bucket); the store equals one local ingest of those days (the
    session's ``small_store``)."""
    remote = f"s3://{s3_bucket}/both.zarr"
    procs = [
        subprocess.Popen(
            ingest_args(archive, small_sds, remote),  # type: ignore[arg-type]
            env=cli_env(prefect_server),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    local = str(small_store[0])
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=1200)
        assert proc.returncode == 0, err[-5000:]
        outputs.append(out + err)
    assert_same_store(remote, local, day_requests(small_sds, "2015-01-01", "2022-01-01"))
    assert_no_credentials(remote, *outputs)
