"""``seismoflow migrate`` of a schema-2 store of a whole archive, checked sample for sample.

Ingests the archive (schema 3), writes it as a schema-2 store with the test-only writer
``tests/schema2.py`` (the layout before schema 3, array by array through zarr's public API),
migrates that store back, and compares: every shard byte for byte with the fresh ingest's,
and the ledger table. Prints the migration's counts and seconds. Run from the repository
root (about 10 minutes on 2 cores):

    .venv/bin/python bench/migrate.py [--store EXISTING_SCHEMA3_STORE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from seismoflow.storage.migrate import migrate_store  # noqa: E402
from seismoflow.storage.tables import read_table  # noqa: E402

from tests.schema2 import write_schema2  # noqa: E402

ARCHIVE = REPO.parent / "shared" / "data" / "archive"


def shards(store: Path) -> dict[str, str]:
    base = store / "continuous"
    return {
        str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(base.rglob("c.*"))
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--archive", type=Path, default=ARCHIVE)
    ap.add_argument("--store", type=Path, help="a schema-3 store of the archive (else ingested)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_migrate_") as name:
        tmp = Path(name)
        src = args.store or tmp / "fresh.zarr"
        if args.store is None:
            subprocess.run(
                [sys.executable, "-m", "seismoflow.cli", "ingest",
                 "--sds", str(args.archive / "sds"),
                 "--stations", str(args.archive / "stations.xml.gz"),
                 "--events", str(args.archive / "events.xml"), "--store", str(src), "--json"],
                check=True, capture_output=True,
            )  # fmt: skip
        old = tmp / "old.zarr"
        t = time.perf_counter()
        write_schema2(str(src), str(old))
        written = time.perf_counter() - t
        t = time.perf_counter()
        counts = migrate_store(str(old))
        migrated = time.perf_counter() - t
        a, b = shards(old), shards(src)
        same = a == b
        ledger = read_table(str(old), "channel_days").equals(read_table(str(src), "channel_days"))
        print(json.dumps({
            "schema2_write_s": round(written, 1), "migrate_s": round(migrated, 1),
            "counts": counts, "shards": len(a), "shards_identical": same,
            "ledger_identical": ledger,
        }, indent=2, default=str))  # fmt: skip


if __name__ == "__main__":
    main()
