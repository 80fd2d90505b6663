"""The store's footprint on the shared archive: this layout against a baseline revision's,
ingested in the same run.

For each revision (this checkout, and ``--baseline REV`` run from a git worktree of that
revision, imported ahead of the installed package), ``seismoflow ingest`` of the archive
(SDS + StationXML + QuakeML, event windows included) into a fresh local folder, then:

- files, folders, Zarr nodes (``zarr.json`` documents), size of the root document;
- files per source day file, and the data objects (``continuous/``) per channel-day;
- ``du`` of the whole store and of ``continuous/``, as a multiple of the source miniSEED;
- seconds to ``xr.open_datatree(store, engine="zarr")`` (best of 3, a fresh process each);
- the ingest's wall time.

Run from the repository root (about 5 minutes on 2 cores):

    .venv/bin/python bench/layout.py --baseline a977ace --json /tmp/bench_layout.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ARCHIVE = REPO.parent / "shared" / "data" / "archive"
OPEN = (
    "import time, warnings, xarray as xr; warnings.simplefilter('ignore'); "
    "t = time.perf_counter(); xr.open_datatree({store!r}, engine='zarr'); "
    "print(time.perf_counter() - t)"
)


def du(path: Path) -> int:
    out = subprocess.run(["du", "-s", "--block-size=1", str(path)], capture_output=True, text=True)
    return int(out.stdout.split()[0])


def count(store: Path) -> dict[str, Any]:
    files = dirs = nodes = 0
    for _, dnames, fnames in os.walk(store):
        dirs += len(dnames)
        files += len(fnames)
        nodes += sum(1 for f in fnames if f == "zarr.json")
    return {
        "files": files,
        "dirs": dirs,
        "zarr_nodes": nodes,
        "root_doc_bytes": (store / "zarr.json").stat().st_size,
        "du_bytes": du(store),
        "continuous_du_bytes": du(store / "continuous"),
        "continuous_files": sum(len(f) for _, _, f in os.walk(store / "continuous")),
    }


def open_seconds(store: Path, env: dict[str, str], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        proc = subprocess.run(
            [sys.executable, "-c", OPEN.format(store=str(store))],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        times.append(float(proc.stdout.strip().splitlines()[-1]))
    return min(times)


def measure(archive: Path, store: Path, env: dict[str, str], cwd: Path) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-c",
        "from seismoflow.cli import main; main()",
        "ingest",
        "--sds",
        str(archive / "sds"),
        "--stations",
        str(archive / "stations.xml.gz"),
        "--events",
        str(archive / "events.xml"),
        "--store",
        str(store),
        "--json",
    ]
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"ingest failed ({cwd}):\n{proc.stderr[-3000:]}")
    wall = time.perf_counter() - t
    summary = json.loads(proc.stdout)
    out = count(store)
    out.update(
        {
            "ingest_wall_s": wall,
            "units": summary["units"],
            "files_in_archive": summary["files"],
            "open_datatree_s": open_seconds(store, env),
        }
    )
    return out


def overlay_env(tree: Path, tmp: Path) -> dict[str, str]:
    """An environment importing ``seismoflow`` from the worktree ``tree``."""
    overlay = tmp / "overlay" / "seismoflow"
    overlay.mkdir(parents=True)
    for entry in (tree / "seismoflow").iterdir():
        (overlay / entry.name).symlink_to(entry)
    for folder in ("storage", "tasks", "flows", "deployments"):
        (overlay / folder).symlink_to(tree / folder)
    return {**os.environ, "PYTHONPATH": str(overlay.parent)}


@contextlib.contextmanager
def revision_tree(rev: str, tmp: Path) -> Iterator[Path]:
    """A detached git worktree of revision ``rev`` at ``tmp/tree``, removed on exit."""
    tree = tmp / "tree"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(tree), rev], check=True
    )
    try:
        yield tree
    finally:
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False
        )


def run_at_revision(rev: str, script: Path, argv: list[str]) -> dict[str, Any]:
    """``script ARGV --json OUT`` run in a child process on revision ``rev``'s code (a worktree
    imported ahead of the installed package); the JSON it wrote. A relative ``script`` is the
    revision's own copy of it, an absolute one runs as it is here."""
    with tempfile.TemporaryDirectory(prefix="bench_baseline_") as name:
        tmp = Path(name)
        with revision_tree(rev, tmp) as tree:
            out = tmp / "baseline.json"
            subprocess.run(
                [sys.executable, str(tree / script), *argv, "--json", str(out)],
                cwd=tree, env=overlay_env(tree, tmp), check=True,
            )  # fmt: skip
            return dict(json.loads(out.read_text()))


def table(results: dict[str, dict[str, Any]], source_bytes: int) -> str:
    rows = [
        ("files in the store", lambda r: f"{r['files']:,}"),
        ("files per source day file", lambda r: f"{r['files'] / r['files_in_archive']:.2f}"),
        ("folders", lambda r: f"{r['dirs']:,}"),
        ("Zarr nodes (zarr.json)", lambda r: f"{r['zarr_nodes']:,}"),
        ("root zarr.json (MB)", lambda r: f"{r['root_doc_bytes'] / 1e6:.2f}"),
        (
            "continuous/ objects per channel-day",
            lambda r: f"{r['continuous_files'] / r['units']:.2f}",
        ),
        ("du, whole store / miniSEED", lambda r: f"{r['du_bytes'] / source_bytes:.2f}"),
        ("du, continuous/ / miniSEED", lambda r: f"{r['continuous_du_bytes'] / source_bytes:.2f}"),
        ("xr.open_datatree (s, best of 3)", lambda r: f"{r['open_datatree_s']:.2f}"),
        ("ingest wall time (s)", lambda r: f"{r['ingest_wall_s']:.0f}"),
    ]
    names = list(results)
    lines = ["| measure | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, cell in rows:
        lines.append(f"| {label} | " + " | ".join(cell(results[n]) for n in names) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    ap.add_argument("--baseline", help="git revision of the layout to compare with")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    source_bytes = du(args.archive / "sds")
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_layout_") as name:
        tmp = Path(name)
        if args.baseline:
            with revision_tree(args.baseline, tmp) as tree:
                env = overlay_env(tree, tmp)
                # run from outside the worktree: with -c, the current folder is imported first
                results[args.baseline] = measure(args.archive, tmp / "old.zarr", env, tmp)
                print(args.baseline, json.dumps(results[args.baseline]), flush=True)
        results["this layout"] = measure(args.archive, tmp / "new.zarr", dict(os.environ), REPO)
        print("this layout", json.dumps(results["this layout"]), flush=True)
    print(f"\nsource miniSEED: {source_bytes:,} bytes (du)\n")
    print(table(results, source_bytes))
    if args.json:
        args.json.write_text(json.dumps({"source_bytes": source_bytes, **results}, indent=2))


if __name__ == "__main__":
    main()
