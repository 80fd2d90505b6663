"""Killed runs resume, concurrent overlapping runs do not corrupt the store.

Runs the real CLI (a Prefect flow on the session server) in subprocesses over a few
station-days of the real archive (``small_sds``: gaps, off-grid segments, a record over
midnight; linked, not copied), and compares stores array by array with an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from seismoflow.storage.schema import Flag
from seismoflow.storage.tables import read_table

from seismoflow.times import NAT
from tests.conftest import cli_env, ingest_args

pytestmark = [pytest.mark.slow, pytest.mark.data]

LEDGER_FREE = {"ingested_at", "written_at"}  # completion times differ run to run


@pytest.fixture(scope="module")
def subset(small_sds: Path) -> Path:
    return small_sds


def _run(args: list[str], prefect_url: str) -> dict:
    proc = subprocess.run(
        args, env=cli_env(prefect_url), capture_output=True, text=True, timeout=1200
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


def snapshot(location: Path) -> dict[str, object]:
    """The store's content except completion times.

    Continuous data as the sha256 of every stored chunk and metadata file (chunks are
    deterministic); event traces as arrays ordered by ``trace_key``, since concurrent runs
    may append traces in another order.
    """
    out: dict[str, object] = {}
    for path in sorted((location / "continuous").rglob("*")):
        rel = path.relative_to(location)
        # zarr writes local chunks through temporary ``*.partial`` files; a killed run may
        # leave one behind, which no reader ever opens.
        if path.is_file() and path.suffix != ".partial":
            out[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    # The ledger, one row per channel-day, less its completion times.
    days = read_table(str(location), "channel_days").drop(columns=["ingested_at_ns"])
    for col in days.columns:
        out[f"channel_days/{col}"] = days[col].to_numpy()
    events = zarr.open_group(str(location), mode="r", use_consolidated=False)["events"]
    assert isinstance(events, zarr.Group)
    keys = np.asarray(events["trace_key"][:]).astype(object)
    order = np.argsort(keys)
    out["events/trace_key"] = keys[order]
    for var, arr in events.arrays():
        if var not in LEDGER_FREE and arr.shape and arr.shape[0] == keys.size:
            out[f"events/{var}"] = np.asarray(arr[:])[order]
    return out


def assert_same(a: dict[str, object], b: dict[str, object]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        x, y = np.asarray(a[key]), np.asarray(b[key])
        assert x.shape == y.shape, key
        if x.dtype.kind == "f":
            assert np.array_equal(x, y, equal_nan=True), key
        else:
            assert np.array_equal(x, y), key


@pytest.fixture(scope="module")
def reference(
    archive: Path, subset: Path, prefect_server: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict, dict]:
    store = tmp_path_factory.mktemp("ref") / "store.zarr"
    summary = _run(ingest_args(archive, subset, store), prefect_server)
    # The subset holds what the mechanics must survive: gaps, off-grid segments, event
    # windows and day-long data.
    flags = read_table(str(store), "channel_days")["flags"].astype(int)
    for flag in (Flag.GAPS, Flag.TIMING_SHIFT):
        assert ((flags & int(flag)) > 0).any(), flag
    assert summary["units"] >= 40 and summary["windows"]["written"] > 0
    return summary, snapshot(store)


def _ledger_count(store: Path) -> int:
    """Channel-days the ledger records as complete."""
    try:
        days = read_table(str(store), "channel_days")
    except (OSError, ValueError):  # the first part is being written
        return 0
    if days.empty:
        return 0
    return int((days["ingested_at_ns"].astype("int64") != NAT).sum())


def test_killed_ingest_resumes_to_the_same_store(
    archive: Path, subset: Path, prefect_server: str, tmp_path: Path, reference: tuple[dict, dict]
) -> None:
    ref_summary, ref = reference
    store = tmp_path / "store.zarr"
    proc = subprocess.Popen(
        ingest_args(archive, subset, store, "--workers", "1"),
        # small batches, so the ledger grows while the run goes on
        env=cli_env(prefect_server, SEISMOFLOW_BATCH_BYTES="400000"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while _ledger_count(store) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "ingest finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = _ledger_count(store)
    assert 0 < done < ref_summary["units"]
    # The interrupted store is readable as it stands.
    root = zarr.open_group(str(store), mode="r", use_consolidated=False)
    assert len(list(root["continuous"].array_keys())) > 0
    summary = _run(ingest_args(archive, subset, store), prefect_server)
    assert summary["units_skipped"] >= done - 2  # a unit killed mid-write is redone
    assert summary.get("units_written", 0) + summary["units_skipped"] == ref_summary["units"]
    assert_same(snapshot(store), ref)


def test_concurrent_overlapping_ingests(
    archive: Path, subset: Path, prefect_server: str, tmp_path: Path, reference: tuple[dict, dict]
) -> None:
    _, ref = reference
    store = tmp_path / "store.zarr"
    first = subprocess.Popen(
        ingest_args(archive, subset, store, "--end", "2023-01-01"),
        env=cli_env(prefect_server),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    second = subprocess.Popen(
        ingest_args(archive, subset, store, "--start", "2020-01-01"),
        env=cli_env(prefect_server),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for proc in (first, second):
        out, err = proc.communicate(timeout=1200)
        assert proc.returncode == 0, err[-4000:]
    assert_same(snapshot(store), ref)
    table = read_table(str(store), "channel_days")
    keys = list(zip(table["channel"], table["day_ns"], strict=True))
    assert len(keys) == len(set(keys))
