"""Fetch throughput against the local FDSN service: seismoflow vs a plain ObsPy loop.

Both sides make the very same dataselect requests (the bulk lines seismoflow plans for the
chosen events) against one local service (``tests/fdsnws`` over the shared archive), in
the same process, one after the other, best of ``--repeat``:

- **baseline**: what a user script does: one ObsPy ``Client``, ``get_waveforms_bulk`` per
  request in a loop, the answer written to a file;
- **seismoflow**: :func:`seismoflow.fdsn.run.fetch_requests` (retrying client, records
  split and staged per line, ledger in the store) over the same requests, with the
  provider's concurrency limit (3, as ObsPy's mass downloader) across threads.

Optionally (``--delay S``) the service answers every request after ``S`` seconds, which is
closer to a remote data centre, where latency, not local CPU, bounds a download.

    .venv/bin/python bench/fetch.py --start 2022-01-01 --end 2023-01-01 --json out.json
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from obspy.clients.fdsn import Client  # noqa: E402
from obspy.clients.fdsn.header import FDSNNoDataException  # noqa: E402

from seismoflow.fdsn.run import (  # noqa: E402
    Request,
    Selection,
    fetch_metadata,
    fetch_requests,
    plan_requests,
)
from seismoflow.settings import Settings  # noqa: E402
from seismoflow.times import to_ns  # noqa: E402
from tests.fdsnws import Faults, FDSNService  # noqa: E402

ARCHIVE = REPO.parent / "shared" / "data" / "archive"


def baseline(url: str, requests: list[Request], out: Path) -> tuple[float, int]:
    """A plain loop of ``get_waveforms_bulk``; returns (seconds, bytes)."""
    client = Client(base_url=url, timeout=120)
    clock = time.perf_counter()
    nbytes = 0
    for i, req in enumerate(requests):
        buf = io.BytesIO()
        try:
            client.get_waveforms_bulk([ln.as_tuple() for ln in req.lines], filename=buf)
        except FDSNNoDataException:
            continue
        (out / f"{i}.mseed").write_bytes(buf.getvalue())
        nbytes += len(buf.getvalue())
    return time.perf_counter() - clock, nbytes


def ours(settings: Settings, requests: list[Request], staging: Path) -> tuple[float, int]:
    """seismoflow's fetch over the same requests, ``fetch_concurrency`` at once."""
    clock = time.perf_counter()
    shares = [requests[i :: settings.fetch_concurrency] for i in range(settings.fetch_concurrency)]
    with ThreadPoolExecutor(settings.fetch_concurrency) as pool:
        outs = list(
            pool.map(lambda s: fetch_requests(settings.store, s, settings, staging), shares)
        )
    seconds = time.perf_counter() - clock
    return seconds, sum(o["stats"].get("waveform_bytes", 0) for o in outs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--start", default="2022-01-01")
    ap.add_argument("--end", default="2023-01-01")
    ap.add_argument("--max-distance", type=float, default=0.6)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--delay", type=float, default=0.0, help="seconds added to every answer")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    faults = Faults(slow=1.0, slow_seconds=args.delay) if args.delay > 0 else Faults()
    results: dict[str, Any] = {"delay_s": args.delay, "runs": []}
    with FDSNService(ARCHIVE) as svc, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        settings = Settings(
            store=str(work / "plan.zarr"),
            fdsn_url=[svc.url],
            max_distance_deg=args.max_distance,
            fetch_timeout_s=max(60.0, 4 * args.delay),
        )
        selection = Selection(to_ns(args.start), to_ns(args.end))
        meta = fetch_metadata(selection, settings, work / "meta")
        import pandas as pd

        requests, _ = plan_requests(meta, selection, settings, pd.DataFrame())
        results["requests"] = len(requests)
        results["lines"] = sum(len(r.lines) for r in requests)
        svc.faults = faults
        for rep in range(args.repeat):
            base_dir = work / f"base{rep}"
            base_dir.mkdir()
            b_s, b_bytes = baseline(svc.url, requests, base_dir)
            run_settings = settings.model_copy(update={"store": str(work / f"s{rep}.zarr")})
            o_s, o_bytes = ours(run_settings, requests, work / f"stage{rep}")
            results["runs"].append(
                {"baseline_s": b_s, "baseline_bytes": b_bytes, "seismoflow_s": o_s,
                 "seismoflow_bytes": o_bytes}
            )  # fmt: skip
            shutil.rmtree(base_dir)
    best_b = min(r["baseline_s"] for r in results["runs"])
    best_o = min(r["seismoflow_s"] for r in results["runs"])
    results["baseline_best_s"] = best_b
    results["seismoflow_best_s"] = best_o
    results["speedup"] = best_b / best_o
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
