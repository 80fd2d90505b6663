"""Shared fixtures: the real data folder, one Prefect server per session, temp stores.

Data-bound tests use ``../shared/data`` beside the repository (or ``SEISMOFLOW_TEST_DATA``).
Without it they are skipped with the reason printed; with ``SEISMOFLOW_REQUIRE_DATA=1``
(set by ``.ci/run``) a missing folder fails them instead.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SEISMOFLOW_TEST_DATA", REPO.parent / "shared" / "data"))
ARCHIVE = DATA / "archive"
OUTPUT = REPO / "test-output"

# The Python processes a run starts (workers, their Prefect servers, CLI runs, Dask and
# Prefect workers) share compiled bytecode: where PYTHONDONTWRITEBYTECODE is set and the
# environment was installed without .pyc files (uv's default), each of them would compile
# scipy, pandas, Prefect and the rest from source again, ~7 CPU seconds a process
# (bench/imports.py). Unset here, before pytest-xdist starts its workers, the first process
# to import a module writes its .pyc and the others read it.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

# Under pytest-xdist the workers share the cores: one compute thread each (torch, BLAS), in
# this process and the CLI runs it starts, rather than several threads per worker spinning.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

# The order in which pytest-xdist hands out test modules (``--dist loadfile``, no reorder):
# the longest first, so that the last module a worker gets is a short one; the session chain
# (ingest, features, model) is built by the first module that asks, here ``test_models``,
# while the other workers run modules that do not need it. Others follow in file order.
HEAVY_FIRST = (
    "test_models.py", "test_s3.py", "test_reprocess.py", "test_fetch.py", "test_predict.py",
    "test_features.py", "test_archive_batch.py", "test_deployments.py", "test_resume.py",
    "test_cli_errors.py", "test_reaper.py", "test_api.py", "test_ingest_archive.py",
    "test_cnn.py", "test_hostile_archive.py", "test_fetch_hostile.py", "test_migrate.py",
    "test_tables.py", "test_workers.py", "test_ui.py",
)  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def _require_data() -> bool:
    return os.environ.get("SEISMOFLOW_REQUIRE_DATA", "") not in ("", "0", "false")


@pytest.fixture(scope="session")
def archive() -> Path:
    """The shared real archive (SDS + StationXML + QuakeML); skip or fail without it."""
    if not (ARCHIVE / "sds").is_dir():
        reason = f"real archive not found at {ARCHIVE} (set SEISMOFLOW_TEST_DATA)"
        if _require_data():
            pytest.fail(f"{reason}; SEISMOFLOW_REQUIRE_DATA=1 forbids skipping")
        pytest.skip(reason)
    return ARCHIVE


def shared(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[], Any]) -> Any:
    """``build()`` once per test run, however many pytest-xdist workers ask for it.

    The first worker to ask builds it under a lock in the run's temp folder and leaves the
    (JSON) result there; the others wait for the lock and read it, the pattern pytest-xdist
    documents for session fixtures. Without xdist this is just ``build()``. The result must
    survive a JSON round trip (paths as strings); what it points to is read-only.
    """
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return json.loads(json.dumps(build(), default=str))
    root = tmp_path_factory.getbasetemp().parent
    done = root / f"shared-{name}.json"
    with FileLock(str(root / f"shared-{name}.lock")):
        if done.is_file():
            return json.loads(done.read_text())
        result = json.loads(json.dumps(build(), default=str))
        done.write_text(json.dumps(result))
        return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real ``prefect server`` (SQLite) for the session; flows in tests report to it."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": "",
        "PREFECT_UI_API_URL": url,
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
    }
    log = open(home / "server.log", "w")  # noqa: SIM115 - open for the server's lifetime
    prefect = shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"
    proc = subprocess.Popen(
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"prefect server did not start; see {home / 'server.log'}")
        time.sleep(0.5)
    old = {
        k: os.environ.get(k)
        for k in ("PREFECT_API_URL", "PREFECT_HOME", "PREFECT_SERVER_ANALYTICS_ENABLED")
    }
    os.environ.update(
        {
            "PREFECT_API_URL": url,
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
    )
    # Flows run inside this process too: Prefect read its settings when it was imported,
    # so the environment alone would leave them on a temporary server of their own.
    from prefect.settings import PREFECT_API_URL, temporary_settings

    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def cli_env(prefect_url: str, **extra: str) -> dict[str, str]:
    """Environment for running the ``seismoflow`` CLI against the session's server."""
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "SEISMOFLOW_MAX_WORKERS": "2",
    }
    env.update(extra)
    return env


def seismoflow_cmd() -> list[str]:
    return [sys.executable, "-m", "seismoflow.cli"]


def ingest_args(archive: Path, sds: Path, store: Path, *extra: str) -> list[str]:
    """``seismoflow ingest`` of ``sds`` with the archive's StationXML and QuakeML."""
    return [
        *seismoflow_cmd(), "ingest", "--sds", str(sds),
        "--stations", str(archive / "stations.xml.gz"), "--events", str(archive / "events.xml"),
        "--store", str(store), "--json", *extra,
    ]  # fmt: skip


def link_sds(archive: Path, years: tuple[str, ...], dest: Path) -> Path:
    """An SDS tree of links to the archive's day files of ``years`` (nothing is copied)."""
    for year in years:
        for src in (archive / "sds" / year).rglob("*.D.*"):
            dst = dest / src.relative_to(archive / "sds")
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src)
    return dest


# A few station-days of the archive for the mechanics tests (resume, concurrency, batches):
# 2020-04-12 (day 103) holds two PNSN events whose windows at UW.AUG, UW.TDH, UW.VBE, UW.VFP
# and UW.VLL are separated by a gap and off each other's sample grid (README: "not
# sample-aligned"), and UW.VFP..EHZ is flat; 2021-03-03 (day 062) holds off-grid windows at
# UW.LO2 and UW.RCS, RCS clipped, and channels without StationXML; GR.FUR..BHN is a 20 Hz
# continuous record that runs over midnight from 2015-12-27 into 12-28. The archive holds no
# overlapping segments (README, verification); the mechanics tests overlap their runs.
SMALL_SUBSET = ("*.D.2020.103", "*.D.2021.062", "GR.FUR..BHN.D.2015.36[12]")


def link_day_files(archive: Path, patterns: tuple[str, ...], dest: Path) -> Path:
    """An SDS tree of links to the archive's day files matching ``patterns``."""
    for pattern in patterns:
        for src in (archive / "sds").rglob(pattern):
            dst = dest / src.relative_to(archive / "sds")
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src)
    return dest


@pytest.fixture(scope="session")
def small_sds(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:data:`SMALL_SUBSET` of the archive as an SDS tree of links (41 day files)."""

    def build() -> Path:
        return link_day_files(archive, SMALL_SUBSET, tmp_path_factory.mktemp("small") / "sds")

    return Path(shared(tmp_path_factory, "small-sds", build))


@pytest.fixture(scope="session")
def small_store(
    archive: Path, small_sds: Path, prefect_server: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    """:func:`small_sds` ingested once, in this process, by an uninterrupted run: the
    reference store of the mechanics tests (resume, concurrency, batches). Read-only.

    The summary is as ``seismoflow ingest --json`` prints it (a JSON round trip)."""
    from seismoflow import api

    def build() -> tuple[Path, dict[str, Any]]:
        store = tmp_path_factory.mktemp("small-store") / "store.zarr"
        summary = api.ingest(
            small_sds, str(store), stations=archive / "stations.xml.gz",
            events=archive / "events.xml", workers=2,
        )  # fmt: skip
        return store, summary

    store, summary = shared(tmp_path_factory, "small-store", build)
    return Path(store), summary


def run_cli(args: list[str], prefect_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``seismoflow ARGS`` against the session's Prefect server; fail on a non-zero exit."""
    proc = subprocess.run(
        [*seismoflow_cmd(), *args],
        env=cli_env(prefect_url, **env),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    return proc


def ingest(archive: Path, store: Path, prefect_url: str, *extra: str) -> dict[str, Any]:
    """``seismoflow ingest --json`` of the whole archive into ``store``; its summary."""
    args = ingest_args(archive, archive / "sds", store, *extra)[len(seismoflow_cmd()) :]
    return dict(json.loads(run_cli(args, prefect_url).stdout))


@pytest.fixture(scope="session")
def archive_store(
    archive: Path, prefect_server: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    """The whole real archive ingested once per session (store path, ingest summary).

    Shared by many tests: treat it as read-only. Tests that write into a store (features,
    predictions) copy it first with :func:`copy_store`.
    """

    def build() -> tuple[Path, dict[str, Any]]:
        store = tmp_path_factory.mktemp("archive") / "store.zarr"
        summary = ingest(archive, store, prefect_server)
        OUTPUT.mkdir(exist_ok=True)
        (OUTPUT / "archive-ingest-summary.json").write_text(json.dumps(summary, indent=2))
        return store, summary

    store, summary = shared(tmp_path_factory, "archive-store", build)
    return Path(store), summary


def copy_store(store: Path, dest: Path) -> Path:
    """A private copy of a local store (for tests that write into it)."""
    shutil.copytree(store, dest, symlinks=True)
    return dest


# --- the session chain over the whole archive: ingest -> features -> model ------------------


@pytest.fixture(scope="session")
def featured_store(
    archive_store: tuple[Path, dict[str, Any]],
    archive: Path,
    prefect_server: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, Any], list[str]]:
    """A copy of the archive store after ``seismoflow features`` (4 noise windows per channel
    set, the archive's RockNet label lists kept out of noise): (store, summary, lists).

    Read-only: the feature tests read it, ``trained_model`` trains on it, ``test_predict``
    writes its predictions into a copy (pytest-xdist may run any of them at once).
    """

    def build() -> tuple[Path, dict[str, Any], list[str]]:
        store = copy_store(archive_store[0], tmp_path_factory.mktemp("features") / "s.zarr")
        lists = [str(p) for p in sorted((archive / "sources" / "rocknet").glob("*_meta.csv"))]
        args = ["features", "--store", str(store), "--per-channel-set", "4", "--json"]
        for path in lists:
            args += ["--noise-label-list", path]
        return store, json.loads(run_cli(args, prefect_server).stdout), lists

    store, summary, lists = shared(tmp_path_factory, "featured-store", build)
    return Path(store), summary, lists


@pytest.fixture(scope="session")
def trained_model(
    featured_store: tuple[Path, dict[str, Any], list[str]],
    prefect_server: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, Path, dict[str, Any]]:
    """One fast ``seismoflow train`` (1 CNN epoch, 60 trees, one CV fold seed) on the featured
    store: (store, model directory, summary). The training only reads the store."""
    store = featured_store[0]

    def build() -> dict[str, Any]:
        models = tmp_path_factory.mktemp("trained") / "models"
        args = ["train", "--store", str(store), "--models-dir", str(models), "--json"]
        fast = ["--epochs", "1", "--trees", "60", "--cv-seeds", "0"]
        return dict(json.loads(run_cli([*args, *fast], prefect_server).stdout))

    out = shared(tmp_path_factory, "trained-model", build)
    return store, Path(str(out["model_dir"])), out


# --- optional: CPU seconds per test (SEISMOFLOW_TEST_CPU=FILE appends one JSON line each) ---


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """With ``SEISMOFLOW_TEST_CPU=FILE``, record each test's wall and CPU seconds (this
    process and the subprocesses it waited for: CLI runs; not the session's servers),
    set-up and tear-down included, to find where a parallel suite's cores go."""
    path = os.environ.get("SEISMOFLOW_TEST_CPU")
    if not path:
        yield
        return
    import resource

    def cpu() -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    wall, used = time.monotonic(), cpu()
    yield
    row = {
        "test": item.nodeid,
        "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
        "wall_s": round(time.monotonic() - wall, 2),
        "cpu_s": round(cpu() - used, 2),
    }
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
