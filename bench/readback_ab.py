"""Read-back of one store by the reader of several revisions, alternating, in one run.

``bench/ingest.py --baseline REV`` measures each revision in its own half of a run, each
ingesting its own store and reading it back against its own ObsPy reference; on a shared
machine the two halves run under different loads. This script holds everything but the
reader fixed: it ingests the archive's day files of one kind (``small`` or ``day-long``, as
``bench/ingest.py`` classifies them) once with this checkout, then times
``bench/ingest.py``'s ``read_reader`` (``ContinuousReader.pieces`` over each channel-day's
recorded extent) on that store with each revision's code (a git worktree imported ahead of
the installed package, in a child process pinned to one core), revisions alternating for
``--rounds`` rounds, best of ``--repeat`` reads each. Prints Msamples/s per revision and
round, and each revision's ratio to the first one's in the same round.

    .venv/bin/python bench/readback_ab.py 4af24f6 HEAD --kind small --json /tmp/ab.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(store: str, rows_file: Path, repeat: int) -> None:
    """Best CPU time of ``repeat`` read-backs of the store (prints JSON)."""
    import ingest as bench  # bench/ingest.py; seismoflow from this process's path

    rows = json.loads(rows_file.read_text())
    best = float("inf")
    samples = 0
    for _ in range(repeat):
        c0 = time.process_time()
        samples = bench.read_reader(store, rows)
        best = min(best, time.process_time() - c0)
    print(json.dumps({"cpu_s": best, "samples": samples}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("revisions", nargs="+", help="git revisions (HEAD: this checkout's)")
    ap.add_argument("--kind", default="small", choices=("small", "day-long"))
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=5, help="reads per child; the best is kept")
    ap.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)), help="core to use")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), args.repeat)
        return
    sys.path.insert(0, str(HERE))
    import ingest as bench
    from layout import overlay_env

    repo = HERE.parent
    with tempfile.TemporaryDirectory(prefix="bench_readback_ab_") as name:
        tmp = Path(name)
        kinds = bench.classify(bench.DEFAULT_ARCHIVE / "sds")
        tree = bench.link_tree(kinds[args.kind], bench.DEFAULT_ARCHIVE / "sds", tmp / "sds")
        store = str(tmp / "store.zarr")
        results, _ = bench.ingest(tree, bench.DEFAULT_ARCHIVE / "stations.xml.gz", store)
        rows_file = tmp / "rows.json"
        rows = [r.row for r in results if r.status == "written"]
        rows_file.write_text(json.dumps(rows, default=int))
        envs: dict[str, dict[str, str]] = {}
        trees: list[Path] = []
        try:
            for rev in args.revisions:
                if rev == "HEAD":
                    envs[rev] = dict(os.environ)
                    continue
                wt = tmp / f"tree-{rev}"
                subprocess.run(
                    ["git", "-C", str(repo), "worktree", "add", "--detach", "-q", str(wt), rev],
                    check=True,
                )
                trees.append(wt)
                envs[rev] = overlay_env(wt, tmp / f"ov-{rev}")
            rates: dict[str, list[float]] = {rev: [] for rev in args.revisions}
            for _ in range(args.rounds):
                for rev in args.revisions:
                    out = subprocess.run(
                        ["taskset", "-c", str(args.cpu), sys.executable, __file__, "x",
                         "--repeat", str(args.repeat), "--child", store, str(rows_file)],
                        env={**envs[rev], "OMP_NUM_THREADS": "1"}, cwd=HERE,
                        check=True, capture_output=True, text=True,
                    )  # fmt: skip
                    got = json.loads(out.stdout.strip().splitlines()[-1])
                    rates[rev].append(got["samples"] / got["cpu_s"] / 1e6)
        finally:
            for wt in trees:
                subprocess.run(
                    ["git", "-C", str(repo), "worktree", "remove", "--force", str(wt)], check=False
                )
    first = args.revisions[0]
    print(f"read-back of {len(rows)} {args.kind} channel-days, Msamples/s (CPU), by round:")
    for rev in args.revisions:
        cells = " ".join(f"{r:6.2f}" for r in rates[rev])
        ratios = [r / f for r, f in zip(rates[rev], rates[first], strict=True)]
        mean = sum(ratios) / len(ratios)
        print(f"  {rev:>10s}: {cells}   / {first}: " + " ".join(f"{x:.2f}" for x in ratios)
              + f"  (mean {mean:.3f})")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"kind": args.kind, "msamples_per_s": rates}, indent=2))


if __name__ == "__main__":
    main()
