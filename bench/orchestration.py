"""Orchestration overhead, throughput and worker memory of ``archive-batch`` on Dask.

Starts a Prefect server (unless PREFECT_API_URL is set) and, per run, a Dask scheduler and N
single-threaded worker processes with the ``dask`` CLI (2 GB limit each, as a real cluster
would run them), then runs the ``archive-batch`` flow against them into a fresh store:

* ``1x`` with 1 and 2 workers: overhead (1 - task work / (wall x threads)) and throughput
  (station-days per second of the continuous phase);
* ``4x`` (an archive ~4 times the station-days of ``1x``) with 2 workers: peak RSS per worker
  process (sampled every 0.2 s, and each worker's own ``VmHWM``), to compare with ``1x``,
  and each worker's resident memory after each task against the channel-days, then
  event-window traces, it had processed (``worker_memory``: levels off or grows?).

Each phase's idle thread time (wall x threads - work) is split into the start (before each
thread's first task), between tasks (the per-task cost of Prefect and Dask on a thread that
had a task waiting), the tail (after each thread's last task) and unused threads.

``--calibrate`` instead ingests the 1x archive one station-day at a time in this process and
fits its work as seconds per MB of source and per channel-day (the estimate that sizes
batches: ``seismoflow.scaleout.UNIT_COST_BYTES``).

Usage: .venv/bin/python bench/orchestration.py [--years-1x 2021 | --quarter-1x]
       [--station-days 24] [--sweep 8,32,128] [--skip-4x] [--json FILE] [--calibrate]
Nothing of the archive is copied: stores and link trees go to a temp folder.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import link_sds  # noqa: E402

ARCHIVE = Path(os.environ.get("SEISMOFLOW_TEST_DATA", REPO.parent / "shared" / "data")) / "archive"
BIN = Path(sys.executable).parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prefect_server(home: Path) -> tuple[str, subprocess.Popen[bytes] | None]:
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"], None
    port = _port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
    }
    proc = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(240):
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                break
        except OSError:
            time.sleep(0.5)
    os.environ.update(PREFECT_API_URL=url, PREFECT_HOME=str(home))
    return url, proc


class Cluster:
    """A scheduler and ``n`` worker processes started with the ``dask`` CLI."""

    def __init__(self, n: int, log_dir: Path) -> None:
        port = _port()
        self.address = f"tcp://127.0.0.1:{port}"
        self.procs: list[subprocess.Popen[bytes]] = []
        out = open(log_dir / f"dask-{n}.log", "ab")  # noqa: SIM115 - lives with the cluster
        self.procs.append(
            subprocess.Popen(
                [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                 "--dashboard-address", "127.0.0.1:0"],
                cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            )
        )  # fmt: skip
        self.workers = [
            subprocess.Popen(
                [str(BIN / "dask"), "worker", self.address, "--nworkers", "1", "--nthreads",
                 "1", "--memory-limit", "2GB", "--host", "127.0.0.1", "--no-dashboard"],
                cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            )
            for _ in range(n)
        ]  # fmt: skip
        self.procs += self.workers
        from distributed import Client

        deadline = time.monotonic() + 180
        while True:
            try:
                with Client(self.address, timeout=5) as client:
                    client.wait_for_workers(n, timeout=180)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def worker_pids(self) -> list[int]:
        """The processes doing the work: each ``dask worker`` and its nanny's children."""
        pids = []
        for w in self.workers:
            proc = psutil.Process(w.pid)
            pids += [proc.pid, *(c.pid for c in proc.children(recursive=True))]
        return pids

    def close(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


class PeakRss(threading.Thread):
    """Samples the RSS of each process every ``every_s``; keeps the peak per process."""

    def __init__(self, pids: list[int], every_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pids, self.every_s = pids, every_s
        self.peak: dict[int, int] = dict.fromkeys(pids, 0)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for pid in self.pids:
                with contextlib.suppress(psutil.NoSuchProcess):
                    self.peak[pid] = max(self.peak[pid], psutil.Process(pid).memory_info().rss)
            time.sleep(self.every_s)


def run(
    sds: Path, store: Path, workers: int, station_days: int, work: Path, events: bool = True
) -> dict[str, Any]:
    from seismoflow.flows.archive_batch import run_archive_batch

    from seismoflow.settings import load_settings

    cluster = Cluster(workers, work)
    sampler = PeakRss(cluster.worker_pids())
    sampler.start()
    try:
        clock = time.perf_counter()
        summary = run_archive_batch(
            load_settings(None, store=str(store), archive_station_days=station_days),
            str(sds),
            str(ARCHIVE / "stations.xml.gz"),
            str(ARCHIVE / "events.xml") if events else None,
            None,
            None,
            cluster.address,
        )
        wall = time.perf_counter() - clock
    finally:
        sampler.stop.set()
        sampler.join()
        cluster.close()
    cont = summary["orchestration"]["continuous"]
    for phase in summary["orchestration"].values():
        busy = phase["tasks"] - phase["threads"]  # tasks that followed another on a thread
        phase["between_per_task_s"] = round(phase["idle"]["between_s"] / max(busy, 1), 3)
    return {
        "workers": workers,
        "per_task": station_days,
        "events": events,
        "station_days": summary["station_days"],
        "units": summary["units"],
        "batches": summary["batches"],
        "flow_wall_s": round(wall, 1),
        "continuous": cont,
        "windows": summary["orchestration"].get("windows"),
        "station_days_per_s": round(summary["station_days"] / cont["wall_s"], 2),
        "peak_rss_mb_per_worker": round(max(sampler.peak.values()) / 2**20, 1),
        # VmHWM reported by each worker process after each task (exact, not sampled)
        "peak_hwm_mb_per_worker": max(
            (w["peak_mb"] for w in summary.get("worker_memory", {}).values()), default=0.0
        ),
        "worker_memory": summary.get("worker_memory", {}),
    }


def calibrate(sds: Path, work: Path) -> dict[str, float]:
    """Ingest ``sds`` one station-day at a time; fit seconds = a x MB + b x channel-days."""
    import numpy as np

    from seismoflow.archive.ingest import ingest_batch, plan_ingest, prepare_store
    from seismoflow.scaleout import station_days
    from seismoflow.settings import Settings

    s = Settings(store=str(work / "calibrate.zarr"))
    plan = prepare_store(s.store, plan_ingest(sds, ARCHIVE / "stations.xml.gz", None), s)
    rows = []
    for group in station_days(plan.units).values():
        clock = time.perf_counter()
        ingest_batch(s.store, group, s)
        rows.append((sum(u.size for u in group) / 1e6, len(group), time.perf_counter() - clock))
    x = np.array([r[:2] for r in rows], float)
    y = np.array([r[2] for r in rows])
    (per_mb, per_unit), *_ = np.linalg.lstsq(x, y, rcond=None)
    return {
        "station_days": len(rows),
        "seconds": round(float(y.sum()), 2),
        "s_per_mb": round(float(per_mb), 4),
        "s_per_channel_day": round(float(per_unit), 4),
        "channel_day_in_bytes": round(float(per_unit / per_mb * 1e6)),
    }


def link_quarter(archive: Path, dest: Path) -> Path:
    """1x as a systematic sample of the whole archive: every fourth station-day in order of
    the size of its largest channel-day, then of its source bytes (all its channels), so the
    mix of day-long records and event-length files is that of the whole archive (4x) and
    both hold the archive's largest channel-day, which sets a worker's peak memory (the
    days are built one channel-day at a time)."""
    days: dict[tuple[str, str, str, str], list[Path]] = {}
    for src in (archive / "sds").rglob("*.D.*"):
        net, sta, _loc, _cha, _d, year, doy = src.name.split(".")
        days.setdefault((net, sta, year, doy), []).append(src)

    def size(files: list[Path]) -> tuple[int, int, str]:
        sizes = [f.stat().st_size for f in files]
        return -max(sizes), -sum(sizes), files[0].name

    by_size = sorted(days.values(), key=size)
    for files in by_size[::4]:
        for src in files:
            dst = dest / src.relative_to(archive / "sds")
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--years-1x", default="2021", help="comma-separated SDS years of 1x")
    ap.add_argument("--station-days", type=int, default=24, help="station-days per task")
    ap.add_argument(
        "--sweep",
        type=lambda v: [int(x) for x in v.split(",") if x],
        default=[8, 32, 128],
        help="station-days per task to compare on 1 worker (comma-separated; '' for none)",
    )
    ap.add_argument("--skip-4x", action="store_true")
    ap.add_argument(
        "--quarter-1x",
        action="store_true",
        help="1x = every fourth station-day of the whole archive by size (not --years-1x)",
    )
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument("--calibrate", action="store_true", help="fit the work estimate only")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-orch-"))
    if args.calibrate:
        try:
            sds = link_sds(ARCHIVE, tuple(args.years_1x.split(",")), work / "sds-1x")
            print(json.dumps(calibrate(sds, work), indent=2))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    _, server = _prefect_server(work / "prefect")
    try:
        if args.quarter_1x:
            sds = link_quarter(ARCHIVE, work / "sds-1x")
        else:
            sds = link_sds(ARCHIVE, tuple(args.years_1x.split(",")), work / "sds-1x")
        rows = []
        # Batch size against overhead: 1 worker, continuous data only (no idle tail share).
        for n in args.sweep:
            rows.append({"archive": "1x", **run(sds, work / f"sweep-{n}.zarr", 1, n, work, False)})
        # Throughput 1 vs 2 workers, then memory 1x vs 4x (with event windows).
        for n in (1, 2):
            rows.append(
                {"archive": "1x", **run(sds, work / f"1x-{n}.zarr", n, args.station_days, work)}
            )
        if not args.skip_4x:
            rows.append(
                {
                    "archive": "4x (whole archive)",
                    **run(ARCHIVE / "sds", work / "4x.zarr", 2, args.station_days, work),
                }
            )
        print(json.dumps(rows, indent=2))
        one, two = rows[len(args.sweep)], rows[len(args.sweep) + 1]
        print(
            f"\nthroughput 2 workers / 1 worker: "
            f"{two['station_days_per_s'] / one['station_days_per_s']:.2f}x"
        )
        if not args.skip_4x:
            print(
                f"archive 4x/1x: {rows[-1]['station_days'] / two['station_days']:.2f}x "
                f"station-days; peak RSS per worker 4x/1x: "
                f"{rows[-1]['peak_rss_mb_per_worker'] / two['peak_rss_mb_per_worker']:.2f} "
                f"(VmHWM: {rows[-1]['peak_hwm_mb_per_worker']} / "
                f"{two['peak_hwm_mb_per_worker']} MB)"
            )
            for name, w in rows[-1]["worker_memory"].items():
                curve = ", ".join(f"{n}:{mb}" for n, mb in w["rss_mb"])
                print(f"4x worker {name}: peak {w['peak_mb']} MB; MB after each task: {curve}")
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
