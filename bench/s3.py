"""Ingest into object storage against a local folder, with the S3 requests counted, in one run.

Starts moto's S3 server (``moto[server]``) on 127.0.0.1, then runs ``seismoflow.ingest`` (the
``ingest-archive`` flow, in this process, Prefect in embedded mode) of the same archive twice:
into a local folder and into ``s3://`` on that server. Every request the server answers is
counted by method: ``PUT``, ``GET`` (objects), ``LIST`` (``GET`` of a bucket with
``list-type``), ``HEAD``, ``DELETE``, ``POST`` (multi-object delete). The count is taken at the
server (its werkzeug request log, one line per request), so retries and the store lock's
requests are included. Prints a markdown table: requests per ingest and per channel-day,
objects written, wall time of each ingest and the s3/local ratio.

Run from the repository root (``--years 2022`` limits the run to the archive's day files of
those years, for a quick look; the numbers in BENCHMARKS.md are of the whole archive):

    .venv/bin/python bench/s3.py --json /tmp/bench_s3.json

``--baseline REV`` first runs this benchmark on revision ``REV``'s code (a git worktree
imported ahead of the installed package, in a child process) and prints its table too:
before and after in one run.

``--server-process`` runs moto's server in a process of its own (``python -m moto.server``,
requests counted from its log) instead of a thread of this one, whose request handling
shares the ingest's GIL. ``--by-function`` (thread only) also counts the s3 ingest's requests
by the ingest function running and the kind of object asked for. ``--repeat N`` times N
pairs of ingests (a fresh local folder, then a fresh s3 prefix) and reports each pair's
s3/local wall ratio and their median: one pair's ratio moves with what else the 2 cores do
meanwhile (moto's server among them). Requests are counted on the first pair.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

DEFAULT_ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "archive"
KINDS = ("PUT", "GET", "LIST", "HEAD", "DELETE", "POST")
REQUEST_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[\d.]+" (?P<status>\d{3})')
COLOUR = re.compile(r"\x1b\[[0-9;]*m")  # werkzeug colours the lines of non-200 answers


# The ingest functions whose requests ``--by-function`` counts apart: (module, name). The
# innermost one running when the server answers names the request (the stages run one after
# another; within one, the tasks running at once run the same function).
TAGGED = (
    ("seismoflow.archive.ingest", "plan_ingest"),
    ("seismoflow.archive.ingest", "prepare_store"),
    ("seismoflow.archive.ingest", "ingest_batch"),
    ("seismoflow.archive.ingest", "record_continuous"),
    ("seismoflow.archive.ingest", "record_problems"),
    ("seismoflow.archive.ingest", "prepare_windows"),
    ("seismoflow.archive.ingest", "create_events"),
    ("seismoflow.archive.ingest", "append_traces"),
    ("seismoflow.archive.ingest", "pending_traces"),
    ("seismoflow.archive.ingest", "cut_batch"),
    ("seismoflow.archive.ingest", "finalize"),
)
# What a request's object is, from its key: the first pattern that matches.
OBJECT_KINDS = (
    ("lock", re.compile(r"lock")),
    ("tables", re.compile(r"/tables/")),
    ("continuous shard", re.compile(r"/continuous/.*/c[./]\d")),
    ("continuous zarr.json", re.compile(r"/continuous/.*zarr\.json")),
    ("window trace", re.compile(r"/(events|noise)/waveform/")),
    ("window zarr.json", re.compile(r"/(events|noise)/.*zarr\.json")),
    ("window coordinate", re.compile(r"/(events|noise)/")),
    ("zarr.json, other", re.compile(r"zarr\.json")),
)


class Tags:
    """The innermost tagged function running (a stack, shared by the process's threads)."""

    def __init__(self) -> None:
        self.stack: list[str] = []
        self._guard = threading.Lock()

    def current(self) -> str:
        with self._guard:
            return self.stack[-1] if self.stack else "(none)"

    def install(self) -> None:
        import functools
        import importlib

        for module_name, name in TAGGED:
            module = importlib.import_module(module_name)
            inner = getattr(module, name)

            @functools.wraps(inner)
            def tagged(*args: Any, __inner: Any = inner, __name: str = name, **kw: Any) -> Any:
                with self._guard:
                    self.stack.append(__name)
                try:
                    return __inner(*args, **kw)
                finally:
                    with self._guard:
                        self.stack.remove(__name)

            setattr(module, name, tagged)


def object_kind(target: str) -> str:
    path = target.split("?", 1)[0]
    return next((kind for kind, pattern in OBJECT_KINDS if pattern.search(path)), "other")


class RequestCounter(logging.Handler):
    """Counts the requests moto's server logs (werkzeug: one INFO line per request)."""

    def __init__(self, tags: Tags | None = None) -> None:
        super().__init__(logging.INFO)
        self.counts: collections.Counter[str] = collections.Counter()
        self.by_function: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.tags = tags
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        self.count_line(record.getMessage())

    def count_line(self, line: str) -> None:
        match = REQUEST_LINE.search(COLOUR.sub("", line))
        if match is None:
            return
        method, target = match["method"], match["target"]
        kind = "LIST" if method == "GET" and "list-type=" in target else method
        tag = self.tags.current() if self.tags is not None else ""
        with self._guard:
            self.counts[kind] += 1
            if self.tags is not None:
                self.by_function[(tag, kind, object_kind(target))] += 1
            if match["status"] >= "400":
                self.counts[f"{kind} answered {match['status']}"] += 1

    def take(self) -> dict[str, int]:
        with self._guard:
            out = {k: self.counts.get(k, 0) for k in KINDS}
            out.update({k: v for k, v in sorted(self.counts.items()) if k not in KINDS})
            self.counts.clear()
        return out

    def take_by_function(self) -> list[tuple[str, str, str, int]]:
        with self._guard:
            out = [(*k, v) for k, v in self.by_function.most_common()]
            self.by_function.clear()
        return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(counter: RequestCounter) -> Any:
    """moto's server on a thread of this process (its request handling shares this
    process's GIL with the ingest)."""
    from moto.server import ThreadedMotoServer

    log = logging.getLogger("werkzeug")
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(counter)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    use_endpoint(f"http://127.0.0.1:{port}")
    return server


class ServerProcess:
    """moto's server in a process of its own (``python -m moto.server``), as an S3 service
    is: its CPU time is not this process's. Requests are counted from its log."""

    def __init__(self, counter: RequestCounter, log: Path) -> None:
        self.counter = counter
        self.log = log
        self.offset = 0
        port = _free_port()
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=self._out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"moto's server did not start: {log}") from None
                time.sleep(0.2)
        use_endpoint(f"http://127.0.0.1:{port}")

    def pump(self) -> None:
        """Count the request lines logged since the last call."""
        self._out.flush()
        time.sleep(0.5)  # the server writes a request's line once it has answered it
        with self.log.open("rb") as fh:
            fh.seek(self.offset)
            text = fh.read()
        self.offset += len(text)
        for line in text.decode(errors="replace").splitlines():
            self.counter.count_line(line)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self._out.close()


def use_endpoint(endpoint: str) -> None:
    """Point s3fs at ``endpoint`` with moto's dummy credentials."""
    # dummy credentials for moto; fsspec read its FSSPEC_* environment when imported
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "FSSPEC_S3_ENDPOINT_URL": endpoint,
        }
    )
    import fsspec.config

    fsspec.config.conf["s3"] = {**fsspec.config.conf.get("s3", {}), "endpoint_url": endpoint}


def subset(archive: Path, years: list[str], dest: Path) -> Path:
    """An SDS tree of links to the day files of ``years`` in ``archive``."""
    for year in years:
        for src in sorted((archive / "sds" / year).rglob("*.D.*")):
            dst = dest / src.relative_to(archive / "sds")
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src)
    return dest


def ingest(
    sds: Path, archive: Path, store: str, workers: int
) -> tuple[float, float, dict[str, Any]]:
    """``(wall s, this process's CPU s, summary)`` of one ingest (with moto on a thread,
    the CPU time includes the server's)."""
    import seismoflow
    from seismoflow.settings import Settings

    t0, c0 = time.perf_counter(), time.process_time()
    summary = seismoflow.ingest(
        sds, stations=archive / "stations.xml.gz", events=archive / "events.xml",
        settings=Settings(store=store, max_workers=workers),
    )  # fmt: skip
    return time.perf_counter() - t0, time.process_time() - c0, summary


def count_objects(store: str) -> tuple[int, int]:
    """(objects, bytes) under ``store`` (a folder or an s3:// URL)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(store)
    fs.invalidate_cache()
    sizes = [int(info["size"]) for info in fs.find(root, detail=True).values()]
    return len(sizes), sum(sizes)


def warm_up() -> None:
    """Start Prefect's embedded server and import the ingest's modules before the clocks
    run (else the first ingest, the local one, pays for both)."""
    import seismoflow.flows.ingest  # noqa: F401
    from prefect import flow

    flow(name="bench-s3-warm-up")(lambda: None)()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--years", nargs="*", default=[], help="only these SDS years")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument(
        "--server-process", action="store_true",
        help="run moto's server in a process of its own (default: a thread of this one)",
    )  # fmt: skip
    parser.add_argument(
        "--by-function", action="store_true",
        help="also count the s3 ingest's requests by ingest function and object kind",
    )  # fmt: skip
    parser.add_argument("--baseline", help="git revision to measure first, in the same run")
    parser.add_argument(
        "--repeat", type=int, default=1,
        help="ingest pairs (local, then s3) to time; requests are counted on the first",
    )  # fmt: skip
    args = parser.parse_args()
    logging.getLogger("prefect").setLevel(logging.WARNING)
    # the baseline's worktree lies elsewhere: it is given this run's archive
    old_argv = [*_argv_without_baseline(), "--archive", str(args.archive.resolve())]
    old = baseline(args.baseline, old_argv) if args.baseline else None

    tags = Tags() if args.by_function and not args.server_process else None
    if tags is not None:
        tags.install()
    counter = RequestCounter(tags)
    work = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    process = ServerProcess(counter, work / "moto.log") if args.server_process else None
    server = process if process is not None else start_server(counter)
    pump = process.pump if process is not None else (lambda: None)
    try:
        sds = subset(args.archive, args.years, work / "sds") if args.years else args.archive / "sds"
        n_files = sum(1 for _ in sds.rglob("*.D.*"))
        warm_up()
        import s3fs

        bucket = f"bench-{secrets.token_hex(4)}"
        s3fs.S3FileSystem().mkdir(bucket)
        pump()
        counter.take()
        local_s, local_cpu, local = ingest(
            sds, args.archive, str(work / "local.zarr"), args.workers
        )
        s3_url = f"s3://{bucket}/archive.zarr"
        counter.take_by_function()
        s3_s, s3_cpu, remote = ingest(sds, args.archive, s3_url, args.workers)
        pump()
        requests = counter.take()
        by_function = counter.take_by_function()
        local_objects, local_bytes = count_objects(str(work / "local.zarr"))
        s3_objects, s3_bytes = count_objects(s3_url)
        counter.take()
        # More pairs, each a fresh local folder then a fresh s3 prefix: the ratio of one
        # pair moves with what else the 2 cores do meanwhile (moto's server among them).
        pairs = [(local_s, s3_s, local_cpu, s3_cpu)]
        for i in range(1, args.repeat):
            again_local = ingest(sds, args.archive, str(work / f"local{i}.zarr"), args.workers)
            again_s3 = ingest(sds, args.archive, f"s3://{bucket}/archive{i}.zarr", args.workers)
            pairs.append((again_local[0], again_s3[0], again_local[1], again_s3[1]))
            shutil.rmtree(work / f"local{i}.zarr", ignore_errors=True)
        pump()
        counter.take()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    channel_days = int(remote.get("units") or 0)  # channel-days planned
    total = sum(v for k, v in requests.items() if k in KINDS or " " not in k)
    result = {
        "archive": str(args.archive), "day_files": n_files, "channel_days": channel_days,
        "requests": requests, "requests_total": total,
        "requests_per_channel_day": {k: v / channel_days for k, v in requests.items()}
        if channel_days else {},
        "objects": {"local": local_objects, "s3": s3_objects},
        "bytes": {"local": local_bytes, "s3": s3_bytes},
        "seconds": {"local": round(local_s, 2), "s3": round(s3_s, 2)},
        "s3_over_local": round(s3_s / local_s, 2),
        "cpu_seconds": {"local": round(local_cpu, 2), "s3": round(s3_cpu, 2)},
        "pairs": [
            {"local_s": round(a, 2), "s3_s": round(b, 2), "s3_over_local": round(b / a, 2),
             "cpu_s3_over_local": round(d / c, 2)}
            for a, b, c, d in pairs
        ],
        "s3_over_local_median": round(statistics.median(b / a for a, b, _, _ in pairs), 2),
        "server": "process" if args.server_process else "thread",
        "same_summary": _comparable(local) == _comparable(remote),
        "stages_s": {"local": local.get("seconds"), "s3": remote.get("seconds")},
        "requests_by_function": [
            {"function": f, "request": k, "object": o, "count": n} for f, k, o, n in by_function
        ],
    }  # fmt: skip
    if old is not None:
        result["baseline"] = {"revision": args.baseline, **old}
        print(f"baseline {args.baseline} (same run, first):")
        print(table(old))
        print("\nthis checkout:")
    print(table(result))
    for row in result["requests_by_function"]:
        print(f"{row['count']:7d}  {row['function']:20s} {row['request']:8s} {row['object']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


def _argv_without_baseline() -> list[str]:
    """This run's arguments for the baseline's run: no ``--baseline``, ``--json`` or
    ``--archive``."""
    out, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if arg in ("--baseline", "--json", "--archive"):
            skip = True
            continue
        if not arg.startswith(("--baseline=", "--json=", "--archive=")):
            out.append(arg)
    return out


def baseline(rev: str, argv: list[str]) -> dict[str, Any]:
    """This benchmark (this script) run on revision ``rev``'s code: a git worktree imported
    ahead of the installed package, in a child process."""
    from layout import run_at_revision  # bench/layout.py, beside this script

    return run_at_revision(rev, Path(__file__).resolve(), argv)


def _comparable(summary: dict[str, Any]) -> dict[str, Any]:
    """The ingest summary without times and locations (equal for equal stores)."""
    drop = {"seconds", "store", "flow_run_id", "stages", "elapsed_s"}
    return {k: v for k, v in summary.items() if k not in drop and "second" not in k}


def table(r: dict[str, Any]) -> str:
    cd = r["channel_days"] or 1
    rows = [
        "| measure | local folder | s3:// (moto, 127.0.0.1) |",
        "|---|---|---|",
        f"| day files ingested | {r['day_files']} | {r['day_files']} |",
        f"| channel-days | {r['channel_days']} | {r['channel_days']} |",
        f"| objects (files) written | {r['objects']['local']:,} | {r['objects']['s3']:,} |",
        f"| bytes | {r['bytes']['local']:,} | {r['bytes']['s3']:,} |",
        f"| wall time of the ingest | {r['seconds']['local']:.1f} s | {r['seconds']['s3']:.1f} s "
        f"({r['s3_over_local']:.2f}x) |",
        f"| requests, all | | {r['requests_total']:,} ({r['requests_total'] / cd:.1f} per "
        "channel-day) |",
    ]
    if len(r.get("pairs", ())) > 1:
        ratios = ", ".join(f"{p['s3_over_local']:.2f}x" for p in r["pairs"])
        rows.append(
            f"| s3 / local wall, {len(r['pairs'])} pairs | | {ratios}; median "
            f"**{r['s3_over_local_median']:.2f}x** |"
        )
    if "cpu_seconds" in r:
        cpu = r["cpu_seconds"]
        rows.insert(
            7,
            f"| process CPU time of the ingest | {cpu['local']:.1f} s | {cpu['s3']:.1f} s "
            f"({cpu['s3'] / cpu['local']:.2f}x) |",
        )
    for kind, n in r["requests"].items():
        if n:
            rows.append(f"| requests, {kind} | | {n:,} ({n / cd:.2f} per channel-day) |")
    rows.append(f"| same ingest summary | | {'yes' if r['same_summary'] else 'NO'} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
