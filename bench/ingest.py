"""Archive ingest measured against ObsPy's decode of the same files, as ratios in one run.

Day files are split by kind: ``day-long`` (a file holding more than one hour of samples) and
``small`` (event windows). For each kind a temporary SDS tree of symlinks to the real files
is ingested with the library API (no Prefect, one process pinned to one core) and compared,
in the same run, with ``obspy.read`` of the very same files:

1. ingest throughput (``ingest_batch``, samples per core-second) / ObsPy decode, target >= 0.25;
2. read-back throughput (``ContinuousReader.pieces`` and plain zarr slicing of ``data`` rows)
   / ObsPy decode, target >= 2;
3. bytes of the ``data`` chunk files / source miniSEED bytes, target <= 0.9;
4. peak RSS (``VmHWM``) of a fresh process ingesting the archive once and 4 times (4 stores in one
   process), target: the same peak.

``--stages`` instead times every step of ``seismoflow ingest`` over the whole archive with its
QuakeML (what the flow runs, without Prefect): plan, prepare, channel-days, record, event-window
planning, cutting and finalize, each in CPU seconds and as a multiple of ObsPy's decode of the
same files (measured in the same run).

``--baseline REV`` runs this same measurement with the code of git revision ``REV`` (e.g.
the last commit of the schema-2 layout) in a child process, in the same run, and prints
both side by side: the old layout is the baseline of the new one.

Times are the best of ``--repeat`` runs; ratios use process CPU time (per core) and, in
brackets, wall time. Everything runs pinned to one core (``--cpu``) except a second timing
of the read-back on ``--read-cores`` cores (default 2), where the shard reader decodes a
read's inner chunks on that many threads: its wall time can beat ObsPy's by more than its
CPU time does. Run from the repository root:

    .venv/bin/python bench/ingest.py --json /tmp/bench_ingest.json --baseline a977ace
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import obspy
import zarr
from numcodecs import Blosc, PCodec
from seismoflow.storage.continuous import ContinuousReader
from seismoflow.storage.location import open_root
from seismoflow.storage.schema import CONTINUOUS, continuous_path, day_index

from seismoflow.archive.ingest import (
    UnitResult,
    cut_batch,
    finalize,
    ingest_batch,
    plan_ingest,
    prepare_store,
    prepare_windows,
    record_continuous,
)
from seismoflow.ids import ChannelId
from seismoflow.settings import Settings
from seismoflow.times import rate_fraction

T = TypeVar("T")
DEFAULT_ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "archive"
DAY_LONG_S = 3600.0  # a day file holding more than this many seconds of samples is day-long
KINDS = ("day-long", "small")
PIPELINE = ("plan", "prepare", "ingest", "record")
# Cores the read-back runs on a second time (``--read-cores``): the shard reader decodes a
# read's inner chunks on as many threads (``storage.shardread.decode_threads``).
READ_CORES: set[int] = set()


@dataclass
class Clock:
    wall: float = float("inf")
    cpu: float = float("inf")

    def best(self, other: Clock) -> Clock:
        return Clock(min(self.wall, other.wall), min(self.cpu, other.cpu))


Steps = dict[str, Clock]


def timed(fn: Callable[..., T], *args: Any) -> tuple[T, Clock]:
    """``fn(*args)`` and its wall and process CPU seconds (all threads)."""
    w, c = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, Clock(time.perf_counter() - w, time.process_time() - c)


def classify(sds: Path) -> dict[str, list[Path]]:
    """Day files by kind, from their headers (seconds of samples held)."""
    kinds: dict[str, list[Path]] = {k: [] for k in KINDS}
    for path in sorted(p for p in sds.rglob("*") if p.is_file()):
        st = obspy.read(str(path), headonly=True)
        seconds = sum(tr.stats.npts / tr.stats.sampling_rate for tr in st)
        kinds["day-long" if seconds > DAY_LONG_S else "small"].append(path)
    return kinds


def link_tree(files: list[Path], sds: Path, dest: Path) -> Path:
    """An SDS tree at ``dest`` holding symlinks to ``files`` (same relative paths)."""
    for f in files:
        link = dest / f.relative_to(sds)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(f)
    return dest


def obspy_decode(files: list[Path]) -> int:
    return sum(tr.stats.npts for f in files for tr in obspy.read(str(f)))


def ingest(
    tree: Path,
    stations: Path | None,
    location: str,
    codec: str = "auto",
    events: Path | None = None,
) -> tuple[list[UnitResult], Steps]:
    """Plan, prepare, ``ingest_batch`` over the flow's batches, record; each step timed."""
    s = Settings.model_validate({"store": location, "codec": codec})
    steps: Steps = {}
    plan, steps["plan"] = timed(plan_ingest, tree, stations, events)
    _, steps["prepare"] = timed(prepare_store, location, plan, s)
    results, steps["ingest"] = timed(
        lambda: [r for b in plan.batches(s.batch_bytes) for r in ingest_batch(location, b, s)]
    )
    _, steps["record"] = timed(record_continuous, location, results)
    return results, steps


def read_reader(location: str, rows: list[dict[str, Any]]) -> int:
    """Pieces of each channel-day's recorded extent (first to last sample, from its row)."""
    reader = ContinuousReader(open_root(location, "r"))
    return sum(
        p.data.size
        for r in rows
        for p in reader.pieces(ChannelId.parse(r["channel"]), r["first_ns"], r["last_ns"])
    )


def read_zarr(location: str, rows: list[dict[str, Any]]) -> int:
    """Slice each channel-day's row of its channel's array over the same recorded extent."""
    root = zarr.open_group(location, mode="r", use_consolidated=False)
    arrays: dict[str, Any] = {}
    n = 0
    for r in rows:
        path = continuous_path(ChannelId.parse(r["channel"]), r["sampling_rate"])
        if path not in arrays:
            arrays[path] = root[path]
        fr = rate_fraction(r["sampling_rate"])
        lo = round((r["first_ns"] - r["starttime_ns"]) * fr / 1_000_000_000)
        hi = round((r["last_ns"] - r["starttime_ns"]) * fr / 1_000_000_000) + 1
        n += np.asarray(arrays[path][day_index(r["day_ns"]), lo:hi]).size
    return n


def _shard_chunks(raw: bytes, n_inner: int) -> list[bytes | None]:
    """The inner chunks of one shard, by the sharding codec's index (Zarr v3 spec: at the
    end, one (offset, nbytes) pair of little-endian uint64 per inner chunk, then a crc32c;
    2**64 - 1 marks a chunk not stored)."""
    index = np.frombuffer(raw[-(16 * n_inner + 4) : -4], dtype="<u8").reshape(n_inner, 2)
    empty = np.uint64(2**64 - 1)
    return [None if o == empty else raw[int(o) : int(o) + int(m)] for o, m in index]


def stored_chunks(location: str) -> list[tuple[Any, int, bytes]]:
    """Every stored inner chunk of the continuous arrays: (codec, chunk length, bytes)."""
    out = []
    for doc in sorted(Path(location).glob(f"{CONTINUOUS}/*@*/zarr.json")):
        attrs = json.loads(doc.read_bytes())["attributes"]
        cs = int(attrs["chunk_samples"])
        n_inner = -(-int(attrs["samples_per_day"]) // cs)
        codec = PCodec() if attrs["codec"] == "pcodec" else Blosc()
        for f in sorted(doc.parent.glob("c.*")):
            out += [(codec, cs, c) for c in _shard_chunks(f.read_bytes(), n_inner) if c]
    return out


def _decode(codec: Any, cs: int, raw: bytes) -> np.ndarray:
    if isinstance(codec, PCodec):
        return np.asarray(codec.decode(raw), dtype=np.int32)
    return np.cumsum(np.frombuffer(codec.decode(raw), dtype="<i4"), dtype=np.int32)


def codec_alone(location: str) -> tuple[Clock, Clock]:
    """Decoding every stored inner chunk, then encoding it again, with the store's codecs
    and nothing else (no I/O, no zarr, no assembly): the ceiling of read-back and ingest."""
    chunks = stored_chunks(location)
    decoded, dec = timed(lambda: [_decode(c, cs, raw) for c, cs, raw in chunks])
    pcodec = PCodec(level=6)
    _, enc = timed(lambda: [pcodec.encode(block) for block in decoded])
    return dec, enc


def chunk_bytes(location: str) -> int:
    """Bytes of the continuous arrays' shards (the samples; array documents left out)."""
    return sum(f.stat().st_size for f in Path(location).glob(f"{CONTINUOUS}/*/c.*"))


def measure_kind(
    files: list[Path], sds: Path, stations: Path | None, tmp: Path, repeat: int, codec: str
) -> dict[str, Any]:
    """Best of ``repeat`` runs of: ObsPy decode, ingest into a fresh store, both read-backs."""
    tree = link_tree(files, sds, tmp / "sds")
    best: Steps = {}
    read: dict[str, int] = {}
    for i in range(repeat):
        location = str(tmp / f"store{i}.zarr")
        read["obspy"], obspy_clock = timed(obspy_decode, files)
        results, steps = ingest(tree, stations, location, codec)
        steps["obspy"] = obspy_clock
        steps["pipeline"] = Clock(
            sum(steps[k].wall for k in PIPELINE), sum(steps[k].cpu for k in PIPELINE)
        )
        rows = [r.row for r in results if r.status == "written"]
        read["ingest"] = sum(r.n_samples for r in results)
        read["reader"], steps["reader"] = timed(read_reader, location, rows)
        if len(READ_CORES) > 1:
            pinned = os.sched_getaffinity(0)
            os.sched_setaffinity(0, READ_CORES)
            try:
                read["reader_threads"], steps["reader_threads"] = timed(read_reader, location, rows)
            finally:
                os.sched_setaffinity(0, pinned)
        read["zarr"], steps["zarr"] = timed(read_zarr, location, rows)
        steps["decode"], steps["encode"] = codec_alone(location)
        best = {k: c.best(best.get(k, Clock())) for k, c in steps.items()}
    store_bytes = chunk_bytes(str(tmp / "store0.zarr"))
    source_bytes = sum(f.stat().st_size for f in files)
    return summarize(len(files), read, best, source_bytes, store_bytes)


def summarize(
    files: int, read: dict[str, int], best: Steps, source_bytes: int, store_bytes: int
) -> dict[str, Any]:
    """Rates and ratios; rates count ObsPy's decoded samples, else the store's recorded ones."""
    n = {k: read["obspy" if k == "obspy" else "ingest"] for k in best}
    rate = {k: {"cpu": n[k] / c.cpu, "wall": n[k] / c.wall} for k, c in best.items()}
    return {
        "files": files,
        "samples_read": read,
        "seconds": {k: {"cpu": c.cpu, "wall": c.wall} for k, c in best.items()},
        "samples_per_s": rate,
        "ratio": {
            f"{k}/obspy": {m: rate[k][m] / rate["obspy"][m] for m in ("cpu", "wall")}
            for k in ("ingest", "pipeline", "reader", "reader_threads", "zarr", "decode", "encode")
            if k in best
        },
        # What the codec alone allows: reading at decode speed, ingesting at ObsPy's decode
        # plus the codec's encode (sample for sample, so a ratio of times).
        "ceiling": {
            "read/obspy": best["obspy"].cpu / best["decode"].cpu,
            "ingest/obspy": best["obspy"].cpu / (best["obspy"].cpu + best["encode"].cpu),
        },
        "source_bytes": source_bytes,
        "store_bytes": store_bytes,
        "bytes_ratio": store_bytes / source_bytes,
    }


def combine(kinds: list[dict[str, Any]]) -> dict[str, Any]:
    """The kinds together, as if measured in one go (sums of samples, seconds and bytes)."""
    read = {k: sum(v["samples_read"][k] for v in kinds) for k in kinds[0]["samples_read"]}
    best = {
        k: Clock(*(sum(v["seconds"][k][m] for v in kinds) for m in ("wall", "cpu")))
        for k in kinds[0]["seconds"]
    }
    total = {k: sum(v[k] for v in kinds) for k in ("files", "source_bytes", "store_bytes")}
    return summarize(total["files"], read, best, total["source_bytes"], total["store_bytes"])


def peak_rss_kib() -> int:
    """High-water RSS of this process image (``VmHWM``).

    ``getrusage(RUSAGE_SELF).ru_maxrss`` is not used: Linux carries it over ``execve`` from
    the forking parent, so a child would report the parent's peak.
    """
    status = Path("/proc/self/status").read_text()
    return int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmHWM:")))


def child(tree: Path, stations: Path | None, copies: int, out: Path, codec: str) -> None:
    """Memory case, in a fresh process: ingest ``tree`` into ``copies`` stores in turn."""
    base = peak_rss_kib()
    peaks = []
    for i in range(copies):
        ingest(tree, stations, str(out / f"copy{i}.zarr"), codec)
        peaks.append(peak_rss_kib())
    print(json.dumps({"import_kib": base, "peak_kib_after_copy": peaks}))


def measure_memory(
    tree: Path, stations: Path | None, copies: int, tmp: Path, codec: str
) -> dict[str, Any]:
    """Peak RSS (KiB) of a fresh process ingesting ``tree`` ``copies`` times."""
    out = Path(tempfile.mkdtemp(dir=tmp))
    cmd = [sys.executable, __file__, "--child-tree", str(tree), "--child-copies", str(copies)]
    cmd += ["--child-out", str(out), "--codec", codec]
    cmd += ["--stations", str(stations)] if stations else []
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    shutil.rmtree(out)
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


RATIOS = (
    ("ingest/obspy", "ingest_batch / ObsPy (>= 0.25)"),
    ("pipeline/obspy", "plan..record / ObsPy"),
    ("reader/obspy", "read pieces / ObsPy (>= 2)"),
    ("reader_threads/obspy", "read pieces, --read-cores / ObsPy"),
    ("zarr/obspy", "read zarr rows / ObsPy (>= 2)"),
    ("decode/obspy", "codec decode alone / ObsPy"),
    ("encode/obspy", "codec encode alone / ObsPy"),
)


def ratio_cell(key: str) -> Callable[[dict[str, Any]], str]:
    def cell(v: dict[str, Any]) -> str:
        r = v["ratio"].get(key)
        return "-" if r is None else f"{r['cpu']:.3f} [{r['wall']:.3f}]"

    return cell


def report(result: dict[str, Any]) -> str:
    """The result as a text table: ratios cpu [wall], then peak RSS."""
    kinds: dict[str, Any] = result["kinds"]
    width = 34
    lines = [f"{'ratio, cpu [wall]':{width}}" + "".join(f"{k:>18}" for k in kinds)]

    def row(label: str, cell: Callable[[dict[str, Any]], str]) -> None:
        lines.append(f"{label:{width}}" + "".join(f"{cell(v):>18}" for v in kinds.values()))

    row("files", lambda v: str(v["files"]))
    row("samples (ObsPy)", lambda v: f"{v['samples_read']['obspy']:,}")
    row("ObsPy decode Msamples/s cpu", lambda v: f"{v['samples_per_s']['obspy']['cpu'] / 1e6:.1f}")
    for key, label in RATIOS:
        row(label, ratio_cell(key))
    row("ceiling: read / ObsPy", lambda v: f"{v['ceiling']['read/obspy']:.3f}")
    row("ceiling: ingest / ObsPy", lambda v: f"{v['ceiling']['ingest/obspy']:.3f}")
    row("data chunk bytes / mseed (<= 0.9)", lambda v: f"{v['bytes_ratio']:.3f}")
    lines += ["", f"{'peak RSS MiB (after imports)':{width}}{'1x':>18}{'4x':>18}"]
    for kind, cases in result["memory"].items():
        cells = [
            f"{m['peak_kib_after_copy'][-1] / 1024:.0f} ({m['import_kib'] / 1024:.0f})"
            for m in cases.values()
        ]
        lines.append(f"{kind:{width}}" + "".join(f"{c:>18}" for c in cells))
    return "\n".join(lines)


def stages_run(archive: Path, stations: Path, location: str) -> tuple[Steps, int]:
    """One ingest with events, each step timed; and the number of windows cut."""
    s = Settings.model_validate({"store": location})
    _, steps = ingest(archive / "sds", stations, location, s.codec, archive / "events.xml")
    pending, steps["plan windows"] = timed(prepare_windows, location, s)
    batches = [pending[j : j + s.window_batch] for j in range(0, len(pending), s.window_batch)]
    _, steps["cut windows"] = timed(lambda: [cut_batch(location, b, s) for b in batches])
    _, steps["finalize"] = timed(finalize, location)
    steps["total"] = Clock(sum(c.wall for c in steps.values()), sum(c.cpu for c in steps.values()))
    return steps, len(pending)


def stages(archive: Path, stations: Path, tmp: Path, repeat: int) -> dict[str, Any]:
    """Every step of an archive ingest with events (best of ``repeat``), against ObsPy."""
    files = [f for kind in classify(archive / "sds").values() for f in kind]
    best: Steps = {}
    windows = 0
    for i in range(repeat):
        _, obspy_clock = timed(obspy_decode, files)
        steps, windows = stages_run(archive, stations, str(tmp / f"stages{i}.zarr"))
        steps["obspy decode"] = obspy_clock
        best = {k: c.best(best.get(k, Clock())) for k, c in steps.items()}
        print(f"stages run {i}", {k: round(c.cpu, 2) for k, c in steps.items()}, flush=True)
    obspy_cpu = best["obspy decode"].cpu
    return {
        "files": len(files),
        "windows": windows,
        "cpu_s": {k: c.cpu for k, c in best.items()},
        "wall_s": {k: c.wall for k, c in best.items()},
        "x_obspy_decode": {k: c.cpu / obspy_cpu for k, c in best.items()},
    }


def baseline(rev: str, argv: list[str]) -> dict[str, Any]:
    """This benchmark as revision ``rev`` had it, run on that revision's code in a child
    process (a git worktree, imported ahead of the installed package): the old layout's
    figures, measured in the same run as the new one's."""
    from layout import run_at_revision  # bench/layout.py, beside this script

    return run_at_revision(rev, Path("bench/ingest.py"), argv)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    ap.add_argument("--stations", type=Path, default=None, help="default: the archive's")
    ap.add_argument("--repeat", type=int, default=3, help="runs per kind; the best is kept")
    ap.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)), help="core to use")
    ap.add_argument("--codec", default="auto", choices=("auto", "pcodec", "delta-zstd"))
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-RSS cases")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--stages", action="store_true", help="time every step of an ingest")
    ap.add_argument("--baseline", help="git revision whose layout to measure in the same run")
    ap.add_argument("--child-tree", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--child-copies", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument(
        "--read-cores", type=int, default=2,
        help="also time the read-back on this many cores (the reader decodes on threads)",
    )  # fmt: skip
    args = ap.parse_args()
    allowed = sorted(os.sched_getaffinity(0), key=lambda c: (c != args.cpu, c))
    READ_CORES.update(allowed[: max(1, args.read_cores)])
    os.sched_setaffinity(0, {args.cpu})  # one core; children inherit it
    if args.child_tree:
        return child(args.child_tree, args.stations, args.child_copies, args.child_out, args.codec)
    stations = args.stations or args.archive / "stations.xml.gz"
    sds = args.archive / "sds"
    common = ["--archive", str(args.archive), "--repeat", str(args.repeat), "--cpu", str(args.cpu)]
    if args.stages:
        old = baseline(args.baseline, [*common, "--stages"]) if args.baseline else None
        with tempfile.TemporaryDirectory(prefix="bench_stages_") as name:
            out = stages(args.archive, stations, Path(name), args.repeat)
        head = f" {args.baseline} CPU s | x ObsPy |" if old else ""
        print(
            f"| step | CPU s | x ObsPy decode |{head}\n|---|---|---|" + ("---|---|" if old else "")
        )
        for k in out["cpu_s"]:
            cells = f" {out['cpu_s'][k]:.2f} | {out['x_obspy_decode'][k]:.1f} |"
            if old and k in old["cpu_s"]:
                cells += f" {old['cpu_s'][k]:.2f} | {old['x_obspy_decode'][k]:.1f} |"
            print(f"| {k} |{cells}")
        if args.json:
            args.json.write_text(
                json.dumps({**vars(args), **out, "baseline": old}, indent=2, default=str)
            )
        return
    old = baseline(args.baseline, [*common, "--no-memory"]) if args.baseline else None
    by_kind = classify(sds)
    result: dict[str, Any] = {**vars(args), "kinds": {}, "memory": {}, "baseline": old}
    with tempfile.TemporaryDirectory(prefix="bench_ingest_") as name:
        tmp = Path(name)
        for kind, files in by_kind.items():
            (tmp / kind).mkdir()
            result["kinds"][kind] = measure_kind(
                files, sds, stations, tmp / kind, args.repeat, args.codec
            )
            print(kind, json.dumps(result["kinds"][kind]["ratio"]), flush=True)
        result["kinds"]["whole archive"] = combine(list(result["kinds"].values()))
        whole = link_tree([f for files in by_kind.values() for f in files], sds, tmp / "whole")
        cases = (("day-long", tmp / "day-long" / "sds"), ("whole archive", whole))
        for kind, tree in () if args.no_memory else cases:
            result["memory"][kind] = {
                f"{n}x": measure_memory(tree, stations, n, tmp, args.codec) for n in (1, 4)
            }
            print(kind, "memory", json.dumps(result["memory"][kind]), flush=True)
    print(report(result))
    if old:
        print(f"\nbaseline {args.baseline} (same run):")
        print(report({**old, "memory": {}}))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
