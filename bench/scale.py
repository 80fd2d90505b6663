"""How the store's layout grows with channels and days, on synthetic archives.

For each size (``--channels`` x ``--days``) this writes a synthetic SDS archive with ObsPy
(one short record a day per channel: ``--record-s`` seconds at ``--rate`` Hz of int32
counts from 00:00:00 UTC, Steim-2, plus a StationXML of the channels; ``--record-s 86400
--rate 1`` gives day-long records), ingests it in this process with
``seismoflow.api.ingest`` (Prefect's embedded mode, a private ``PREFECT_HOME``), and reports:

- **files** and **directories** in the store, and **Zarr nodes** (``zarr.json`` files);
- **data chunks**: files that hold samples (chunk or shard files of the continuous sample
  arrays, see :func:`is_data_chunk`), and **metadata bytes**: the bytes of every other file
  (node documents, consolidated metadata, per-day bookkeeping, tables, source documents);
- **open**: ``xr.open_datatree(store, engine="zarr")``, the README's first way to read a
  store, in wall seconds (best of ``--repeat``);
- **listing**: ``os.walk`` over the store and ``fsspec``'s ``find`` (what an object store
  client does), wall seconds;
- **ingest**: wall and CPU seconds of the whole ``seismoflow.api.ingest``, and per
  channel-day after the fixed cost of a run (measured once with a 1 channel x 1 day archive).
  On a shared machine the CPU times are the steadier figures; each row notes the load.

Channel ``i`` is ``XS.S{i // 3:04d}.00.HH{ZNE[i % 3]}``; records start at 00:00:00 UTC each
day from 2021-01-01 (2011-01-01 with ``--day-step``), at the start of any chunking of the day.
Run from the repository root; the temporary archives and stores are removed at the end
(``--keep DIR`` keeps them)::

    .venv/bin/python bench/scale.py --channels 10 100 --days 30
    .venv/bin/python bench/scale.py --channels 100 --days 30 90     # flatness in days
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import obspy
from obspy.core.inventory import Channel, Inventory, Network, Site, Station

COMPONENTS = "ZNE"
NETWORK = "XS"
FIRST_DAY = obspy.UTCDateTime("2021-01-01T00:00:00")
# Days spread over years start earlier: ingest quarantines data from the future.
FIRST_SPREAD_DAY = obspy.UTCDateTime("2011-01-01T00:00:00")


def day_of(d: int, day_step: int) -> obspy.UTCDateTime:
    """Start of the ``d``-th recorded day."""
    return (FIRST_DAY if day_step == 1 else FIRST_SPREAD_DAY) + d * day_step * 86400


def channel_codes(i: int) -> tuple[str, str, str, str]:
    """SEED codes of synthetic channel ``i`` (three components per station)."""
    return NETWORK, f"S{i // 3:04d}", "00", f"HH{COMPONENTS[i % 3]}"


def write_archive(
    root: Path, channels: int, days: int, record_s: float, rate: float, day_step: int = 1
) -> Path:
    """An SDS tree of ``channels`` x ``days`` day files (one every ``day_step`` days) and
    ``stations.xml``; returns ``root``."""
    rng = np.random.default_rng(0)
    npts = round(record_s * rate)
    stations: dict[str, Station] = {}
    first = day_of(0, day_step)
    for i in range(channels):
        net, sta, loc, cha = channel_codes(i)
        if sta not in stations:
            stations[sta] = Station(sta, 46.0, 7.0 + 0.01 * len(stations), 500.0,
                                    site=Site(name=sta), start_date=first)  # fmt: skip
        stations[sta].channels.append(
            Channel(cha, loc, 46.0, 7.0, 500.0, 0.0, sample_rate=rate, start_date=first)
        )
        for d in range(days):
            day = day_of(d, day_step)
            data = np.cumsum(rng.integers(-200, 201, npts)).astype(np.int32)
            header = {"network": net, "station": sta, "location": loc, "channel": cha,
                      "sampling_rate": rate, "starttime": day}  # fmt: skip
            path = root / "sds" / str(day.year) / net / sta / f"{cha}.D"
            path.mkdir(parents=True, exist_ok=True)
            name = f"{net}.{sta}.{loc}.{cha}.D.{day.year}.{day.julday:03d}"
            obspy.Stream([obspy.Trace(data, header)]).write(
                str(path / name), format="MSEED", encoding="STEIM2", reclen=4096
            )
    network = Network(NETWORK, stations=list(stations.values()))
    Inventory(networks=[network], source="bench/scale.py").write(
        str(root / "stations.xml"), format="STATIONXML"
    )
    return root


# Chunk (or shard) files of the continuous sample arrays: ``continuous/<NSLC>/<year>/data/c/...``
# in schema 2, ``continuous/<NSLC>@<rate>hz/c.<day>.<k>`` in schema 3 (not ``continuous/day``,
# the day coordinate). A layout that names them otherwise changes this one pattern.
DATA_CHUNK = re.compile(r"^continuous/(.*/data/c/|[^/]+@[^/]+/c[./])")


def is_data_chunk(relpath: str) -> bool:
    """Whether a store file (path relative to the store root, ``/``-separated) holds samples."""
    return bool(DATA_CHUNK.match(relpath))


def count_store(store: Path) -> dict[str, int]:
    """Files, directories, Zarr nodes, data chunks and bytes (apparent sizes) of a store."""
    files = dirs = nodes = chunks = data_bytes = meta_bytes = 0
    for dirpath, dirnames, filenames in os.walk(store):
        dirs += len(dirnames)
        rel = os.path.relpath(dirpath, store).replace(os.sep, "/")
        for name in filenames:
            files += 1
            size = os.path.getsize(os.path.join(dirpath, name))
            relpath = name if rel == "." else f"{rel}/{name}"
            if name == "zarr.json":
                nodes += 1
            if is_data_chunk(relpath):
                chunks += 1
                data_bytes += size
            else:
                meta_bytes += size
    return {
        "files": files,
        "dirs": dirs,
        "nodes": nodes,
        "data_chunks": chunks,
        "data_bytes": data_bytes,
        "meta_bytes": meta_bytes,
    }


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, float]:
    """Best wall and best CPU time (this process, all threads) of ``repeat`` calls of ``fn``,
    in seconds. CPU time is the steadier figure on a shared machine."""
    wall = cpu = float("inf")
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - t)
        cpu = min(cpu, time.process_time() - c)
    return wall, cpu


def open_tree(store: Path) -> None:
    import xarray as xr

    xr.open_datatree(str(store), engine="zarr").close()


def fsspec_find(store: Path) -> None:
    import fsspec

    fsspec.filesystem("file").find(str(store))


def os_walk(store: Path) -> None:
    for _ in os.walk(store):
        pass


def ingest(root: Path, store: Path) -> tuple[float, float]:
    """Wall and CPU seconds (this process; Prefect's embedded server runs in another) of
    ``seismoflow.api.ingest`` of the synthetic archive at ``root``."""
    import seismoflow

    t, c = time.perf_counter(), time.process_time()
    seismoflow.ingest(root / "sds", str(store), stations=root / "stations.xml")
    return time.perf_counter() - t, time.process_time() - c


def measure(
    tmp: Path,
    channels: int,
    days: int,
    record_s: float,
    rate: float,
    repeat: int,
    fixed: tuple[float, float],
    day_step: int = 1,
) -> dict[str, Any]:
    root = tmp / f"archive-{channels}x{days}"
    t = time.perf_counter()
    write_archive(root, channels, days, record_s, rate, day_step)
    write_s = time.perf_counter() - t
    store = tmp / f"store-{channels}x{days}.zarr"
    ingest_s, ingest_cpu_s = ingest(root, store)
    counts = count_store(store)
    cd = channels * days
    source_bytes = sum(p.stat().st_size for p in (root / "sds").rglob("*.D.*"))
    return {
        "channels": channels,
        "days": days,
        "day_step": day_step,
        "years": len({day_of(d, day_step).year for d in range(days)}),
        "channel_days": cd,
        "source_files": cd,
        "source_bytes": source_bytes,
        "write_archive_s": round(write_s, 2),
        **counts,
        "files_per_channel_day": counts["files"] / cd,
        "nodes_per_channel": counts["nodes"] / channels,
        "meta_bytes_per_channel": counts["meta_bytes"] / channels,
        "meta_bytes_per_channel_day": counts["meta_bytes"] / cd,
        "open_s": (opened := best_of(repeat, lambda: open_tree(store)))[0],
        "open_cpu_s": opened[1],
        "walk_s": best_of(repeat, lambda: os_walk(store))[0],
        "find_s": best_of(repeat, lambda: fsspec_find(store))[0],
        "ingest_s": ingest_s,
        "ingest_cpu_s": ingest_cpu_s,
        "ingest_ms_per_channel_day": 1000 * max(0.0, ingest_s - fixed[0]) / cd,
        "ingest_cpu_ms_per_channel_day": 1000 * max(0.0, ingest_cpu_s - fixed[1]) / cd,
        "load_avg_1min": os.getloadavg()[0],
    }


def fixed_cost(tmp: Path, record_s: float, rate: float) -> tuple[float, float]:
    """Wall seconds of an ingest run of one channel-day (flow start-up, planning, finalize).

    Run twice: the first run also pays Prefect's and the imports' one-off start-up.
    """
    root = write_archive(tmp / "archive-fixed", 1, 1, record_s, rate)
    ingest(root, tmp / "store-fixed-0.zarr")
    return ingest(root, tmp / "store-fixed-1.zarr")


def mib(n: float) -> str:
    return f"{n / 2**20:.2f}"


def label(r: dict[str, Any]) -> str:
    """``channels x days``, with the years they span when spread (``--day-step``)."""
    spread = f" over {r['years']} years" if r.get("day_step", 1) > 1 else ""
    return f"{r['channels']} x {r['days']}{spread}"


def report(fixed: tuple[float, float], rows: list[dict[str, Any]]) -> str:
    """Markdown tables of the results."""
    out = [
        "| channels x days | channel-days | files | dirs | Zarr nodes | data chunks | "
        "files / channel-day | nodes / channel | metadata MiB | metadata B / channel-day | "
        "data MiB / source MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {label(r)} | {r['channel_days']:,} | {r['files']:,} | "
            f"{r['dirs']:,} | {r['nodes']:,} | {r['data_chunks']:,} | "
            f"{r['files_per_channel_day']:.2f} | {r['nodes_per_channel']:.1f} | "
            f"{mib(r['meta_bytes'])} | {r['meta_bytes_per_channel_day']:,.0f} | "
            f"{mib(r['data_bytes'])} / {mib(r['source_bytes'])} |"
        )
    out += [
        "",
        "| channels x days | open_datatree s (CPU s) | os.walk s | fsspec find s | "
        "ingest s (CPU s) | ingest ms / channel-day after the fixed cost (CPU ms) | load |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {label(r)} | {r['open_s']:.2f} ({r['open_cpu_s']:.2f}) | "
            f"{r['walk_s']:.3f} | {r['find_s']:.3f} | "
            f"{r['ingest_s']:.1f} ({r['ingest_cpu_s']:.1f}) | "
            f"{r['ingest_ms_per_channel_day']:.1f} ({r['ingest_cpu_ms_per_channel_day']:.1f}) | "
            f"{r['load_avg_1min']:.1f} |"
        )
    out += [
        "",
        f"Fixed cost of an ingest run (1 channel x 1 day): {fixed[0]:.2f} s "
        f"({fixed[1]:.2f} CPU s). Load: the 1-minute load average after the row.",
    ]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--channels", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--days", type=int, nargs="+", default=[30])
    ap.add_argument("--record-s", type=float, default=60.0, help="seconds recorded per day")
    ap.add_argument("--rate", type=float, default=100.0, help="sampling rate, Hz")
    ap.add_argument(
        "--day-step", type=int, default=1, help="days between records (spread over years)"
    )
    ap.add_argument("--repeat", type=int, default=3, help="timings: best of this many")
    ap.add_argument("--keep", type=Path, help="write archives and stores here and keep them")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    tmp = args.keep or Path(tempfile.mkdtemp(prefix="seismoflow-scale-"))
    tmp.mkdir(parents=True, exist_ok=True)
    # A private Prefect home: the embedded server's database stays out of ~/.prefect.
    os.environ.setdefault("PREFECT_HOME", str(tmp / "prefect-home"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # On a loaded machine the embedded server can take longer than Prefect's 20 s to start.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    try:
        fixed = fixed_cost(tmp, args.record_s, args.rate)
        rows = []
        for channels in args.channels:
            for days in args.days:
                row = measure(
                    tmp, channels, days, args.record_s, args.rate, args.repeat, fixed, args.day_step
                )
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.keep is None:  # a large store in schema 2 is many files: free them
                    for path in tmp.glob(f"*-{channels}x{days}*"):
                        shutil.rmtree(path, ignore_errors=True)
        print()
        print(report(fixed, rows))
        if args.json:
            args.json.write_text(json.dumps({"fixed_s": fixed, "rows": rows}, indent=2))
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
