"""``archive-batch`` on a real Dask cluster writes the same store as ``ingest``.

Starts a Dask scheduler and two single-threaded worker processes on 127.0.0.1 with the
``dask`` CLI, runs ``seismoflow archive-batch --dask-address`` (a Prefect flow on the session
server) over a few station-days of the real archive (``small_sds``: gaps, off-grid
segments, a record over midnight; linked, not copied) in batches of 4 station-days, and
compares the store array by array with the local ingest of the same subset (``small_store``,
the session's uninterrupted run, shared with ``test_resume``).
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from distributed import Client
from seismoflow.storage.tables import read_table
from seismoflow.tasks.batch import Opaque, Timed, _timed, memory, release_memory

from seismoflow.archive.ingest import ChannelDayUnit, UnitResult
from seismoflow.scaleout import (
    UNIT_COST_BYTES,
    Coverage,
    Overhead,
    WorkerMemory,
    add_counts,
    count_station_days,
    idle_split,
    station_day_batches,
    station_of,
    window_chunks,
    work_estimate,
)
from seismoflow.times import NS_PER_DAY
from tests.conftest import OUTPUT, REPO, _free_port, cli_env, run_cli
from tests.test_resume import assert_same, snapshot

DASK = str(Path(sys.executable).parent / "dask")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def dask_scheduler(prefect_server: str, tmp_path: Path) -> Iterator[str]:
    """A scheduler and two worker processes (1 thread, 2 GB each); their address."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = cli_env(prefect_server)
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        commands = [
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--dashboard-address", "127.0.0.1:0"],
            *[
                [DASK, "worker", address, "--nworkers", "1", "--nthreads", "1",
                 "--memory-limit", "2GB", "--host", "127.0.0.1", "--no-dashboard"]
                for _ in range(2)
            ],
        ]  # fmt: skip
        for i, cmd in enumerate(commands):
            log = open(tmp_path / f"dask-{i}.log", "wb")  # noqa: SIM115 - closed below
            logs.append(log)
            procs.append(
                subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            )
        deadline = time.monotonic() + 120
        while True:
            try:
                with Client(address, timeout=5) as client:
                    client.wait_for_workers(2, timeout=max(1, deadline - time.monotonic()))
                break
            except OSError:
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    raise
                time.sleep(0.5)
        yield address
    finally:
        for proc in reversed(procs):
            _stop(proc)
        for log in logs:
            log.close()


def _post(url: str, body: dict[str, object]) -> list[dict[str, object]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        rows: list[dict[str, object]] = json.loads(resp.read())
    return rows


def _channel_days(store: Path) -> list[tuple[object, ...]]:
    table = read_table(str(store), "channel_days").drop(columns=["ingested_at_ns"])
    return sorted(map(tuple, table.astype(str).itertuples(index=False)))


@pytest.mark.slow
@pytest.mark.data
def test_archive_batch_on_dask_cluster_matches_local_ingest(
    archive: Path,
    small_sds: Path,
    small_store: tuple[Path, dict[str, Any]],
    prefect_server: str,
    dask_scheduler: str,
    tmp_path: Path,
) -> None:
    sds = small_sds
    local, ref = small_store  # the session's local ingest of the same subset

    store = tmp_path / "dask.zarr"
    args = [
        "archive-batch", "--sds", str(sds),
        "--stations", str(archive / "stations.xml.gz"), "--events", str(archive / "events.xml"),
        "--store", str(store), "--dask-address", dask_scheduler, "--station-days", "4", "--json",
    ]  # fmt: skip
    summary = json.loads(run_cli(args, prefect_server).stdout)
    OUTPUT.mkdir(exist_ok=True)
    (OUTPUT / "archive-batch-summary.json").write_text(json.dumps(summary, indent=2))

    # Same work, done in many batches, on both worker processes of the cluster.
    assert summary["units"] == ref["units"] > 0
    assert summary.get("units_written") == ref.get("units_written")
    assert summary["samples_written"] == ref["samples_written"]
    assert summary["windows"] == ref["windows"]
    assert summary["station_days"] >= 40
    assert summary["batches"] >= summary["station_days"] // 4
    assert len(summary["dask_workers"]) == 2
    assert len(summary["task_workers"]) == 2
    assert sum(summary["task_workers"].values()) == summary["batches"]
    # each worker process reported its memory after each of its tasks (Linux: /proc)
    memory_ = summary["worker_memory"]
    assert set(memory_) == set(summary["task_workers"])
    assert sum(w["items"] for w in memory_.values()) >= summary["units"]  # + window traces
    if sys.platform.startswith("linux"):
        for name, w in memory_.items():  # one point per task, continuous and windows
            assert len(w["rss_mb"]) >= summary["task_workers"][name]
            assert w["peak_mb"] >= max(mb for _, mb in w["rss_mb"]) > 0
    # Every chunk of continuous data, every event-window array, the channel-day table.
    assert_same(snapshot(store), snapshot(local))
    assert _channel_days(store) == _channel_days(local)

    artifacts = _post(
        f"{prefect_server}/artifacts/filter",
        {"artifacts": {"flow_run_id": {"any_": [summary["flow_run_id"]]}}},
    )
    by_key = {a["key"]: a for a in artifacts}
    assert {"archive-batch-summary", "archive-batch-progress", "archive-batch-coverage"} <= set(
        by_key
    )
    assert by_key["archive-batch-progress"]["type"] == "progress"
    assert float(by_key["archive-batch-progress"]["data"]) == 100.0
    assert "| station_days |" in by_key["archive-batch-summary"]["data"]
    coverage = json.loads(by_key["archive-batch-coverage"]["data"])
    table = read_table(str(local), "channel_days")
    recorded = table[table["n_samples"].astype(int) > 0]["channel"]
    assert {row["station"] for row in coverage} == {".".join(c.split(".")[:2]) for c in recorded}
    assert sum(row["channel_days"] for row in coverage) == len(recorded)

    # Each batch is a Prefect task run of the flow run, recorded as COMPLETED (the runner
    # keeps Prefect's task engine; its events reach the server asynchronously).
    query = {"flow_runs": {"id": {"any_": [summary["flow_run_id"]]}}, "limit": 200}
    want = summary["batches"] + summary["orchestration"]["windows"]["tasks"]
    deadline = time.monotonic() + 60
    while True:
        runs = [
            r
            for r in _post(f"{prefect_server}/task_runs/filter", query)
            if str(r["name"]).startswith(("ingest-station-days", "cut-event-windows"))
        ]
        done = [r for r in runs if r["state_type"] == "COMPLETED"]
        if len(done) >= want or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(done) == want, [r["state_type"] for r in runs]


def _unit(channel: str, day: int, size: int = 10) -> ChannelDayUnit:
    return ChannelDayUnit(
        channel=channel, day_ns=day * NS_PER_DAY, files=(), sources=(), sampling_rate=100.0,
        metadata_rate=100.0, has_metadata=True, size=size, covered_ns=NS_PER_DAY,
    )  # fmt: skip


def test_batches_keep_station_days_whole_and_bounded() -> None:
    units = [
        _unit(f"XX.{sta}..HH{c}", day) for sta in ("AAA", "BBB") for day in range(5) for c in "ZNE"
    ]
    batches = list(station_day_batches(reversed(units), per_batch=3, batch_bytes=10**6))
    key = lambda u: (u.channel, u.day_ns)  # noqa: E731
    assert sorted((u for b in batches for u in b), key=key) == sorted(units, key=key)
    assert [count_station_days(b) for b in batches] == [3, 3, 3, 1]
    for b in batches:  # every channel of a station-day in one batch
        days = {(station_of(u.channel), u.day_ns) for u in b}
        assert len(b) == 3 * len(days)
    by_bytes = list(station_day_batches(units, per_batch=100, batch_bytes=60))
    assert [count_station_days(b) for b in by_bytes] == [2] * 5
    big = list(station_day_batches([_unit("XX.AAA..HHZ", 0, size=1000)], 5, 10))
    assert len(big) == 1  # a station-day larger than batch_bytes is a batch of its own


def test_coverage_and_overhead() -> None:
    day = 2 * NS_PER_DAY
    rows = [
        {"channel": "XX.AAA..HHZ", "day_ns": day, "n_samples": 360000, "sampling_rate": 100.0,
         "flags": 0},
        {"channel": "XX.AAA..HHN", "day_ns": day, "n_samples": 180000, "sampling_rate": 100.0,
         "flags": 1},
        {"channel": "XX.BBB..HHZ", "day_ns": day, "n_samples": 0, "sampling_rate": 100.0,
         "flags": 0},
    ]  # fmt: skip
    cov = Coverage()
    cov.add([UnitResult(r, [], "written", int(r["n_samples"])) for r in rows])
    cov.add([UnitResult({}, [], "failed", 0)])
    assert cov.rows() == [
        {"station": "XX.AAA", "channels": ".HHN,.HHZ", "first_day": "1970-01-03",
         "last_day": "1970-01-03", "days": 1, "channel_days": 2, "recorded_hours": 1.5,
         "flagged_channel_days": 1},
    ]  # fmt: skip
    o = Overhead(wall_s=10.0, work_s=19.0, threads=2, tasks=4)
    assert o.overhead == pytest.approx(0.05)
    assert Overhead(1.0, 0.5, 1, 1).as_dict()["overhead"] == 0.5
    assert add_counts({"a": 1, "f": {"x": 1}}, {"a": 2, "f": {"x": 1, "y": 3}}) == {
        "a": 3, "f": {"x": 2, "y": 3}
    }  # fmt: skip


def test_batches_are_guided_largest_first() -> None:
    # 40 station-days of one channel each, sizes varying: on 2 threads the batches shrink
    # from a quarter of the work down to total / (16 x 2), and cover every unit once.
    units = [_unit(f"XX.S{i:02d}..HHZ", 0, size=1000 * (i % 7)) for i in range(40)]
    total = work_estimate(units)
    batches = list(station_day_batches(units, per_batch=1000, batch_bytes=10**9, threads=2))
    assert sorted(u.channel for b in batches for u in b) == sorted(u.channel for u in units)
    costs = [work_estimate(b) for b in batches]
    assert costs[0] >= total / 4 - UNIT_COST_BYTES
    assert costs[0] > costs[-1]
    assert all(
        later <= earlier + UNIT_COST_BYTES for earlier, later in zip(costs, costs[1:], strict=False)
    )
    assert min(costs) >= total / 32 - UNIT_COST_BYTES
    assert len(batches) < len(units) // 2
    # The caps still hold, whatever the share: a large archive is many bounded tasks.
    capped = list(station_day_batches(units, per_batch=3, batch_bytes=10**9, threads=2))
    assert max(count_station_days(b) for b in capped) == 3
    assert len(capped) >= 40 // 3

    chunks = list(window_chunks(list(range(1000)), 256, threads=2))
    assert [i for c in chunks for i in c] == list(range(1000))
    assert len(chunks[0]) == 250 and len(chunks[-1]) <= len(chunks[0]) // 4
    assert max(map(len, window_chunks(list(range(5000)), 256, threads=2))) == 256


def test_idle_split_and_opaque_arguments() -> None:
    spans = [("a", 1.0, 4.0), ("a", 4.5, 8.0), ("b", 2.0, 9.0)]
    assert idle_split(0.0, 10.0, spans, threads=3) == {
        "start_s": 3.0, "between_s": 0.5, "tail_s": 3.0, "unused_s": 10.0
    }  # fmt: skip
    o = Overhead(10.0, 13.5, 2, 3, idle_split(0.0, 10.0, spans, 2))
    # idle = wall x threads - work, split into start, between and tail
    assert sum(o.idle.values()) == pytest.approx(o.wall_s * o.threads - o.work_s)

    units = [_unit("XX.AAA..HHZ", d) for d in range(3)]
    packed = Opaque(units)
    again = pickle.loads(pickle.dumps(packed))
    assert again.value == units and again.token == packed.token
    assert "3 items" in repr(packed)


def test_worker_memory_after_each_task(tmp_path: Path) -> None:
    # The worker side: VmRSS / VmHWM read from a status file (none: unknown, 0), the heap
    # trimmed after the work where there is glibc, both reported with the task's result.
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmHWM:\t  300000 kB\nVmRSS:\t  250000 kB\n")
    assert memory(str(status)) == (250000 * 1024, 300000 * 1024)
    assert memory(str(tmp_path / "missing")) == (0, 0)
    assert release_memory() is sys.platform.startswith("linux")  # glibc on this Linux
    timed = _timed(lambda n: list(range(n)), 3)
    assert timed.value == [0, 1, 2] and timed.work_s >= 0
    if sys.platform.startswith("linux"):
        assert 0 < timed.rss <= timed.peak_rss

    # The flow side: one point per task, per worker process (``host:pid`` of the worker).
    mb = 2**20
    memory_ = WorkerMemory()
    memory_.add(Timed(None, 1.0, "h:1:10", rss=100 * mb, peak_rss=150 * mb), 40)
    memory_.add(Timed(None, 1.0, "h:2:11", rss=90 * mb, peak_rss=95 * mb), 10)
    memory_.add(Timed(None, 1.0, "h:1:10", rss=110 * mb, peak_rss=140 * mb), 20)
    memory_.add(Timed(None, 1.0, "h:2:11"), 5)  # a worker that could not tell: no point
    assert memory_.as_dict() == {
        "h:1": {"items": 60, "peak_mb": 150.0, "rss_mb": [[40, 100.0], [60, 110.0]]},
        "h:2": {"items": 15, "peak_mb": 95.0, "rss_mb": [[10, 90.0]]},
    }
