"""Append-only tables: a writer killed with SIGKILL at any moment, appending or
compacting, loses no row it had committed, and the table stays readable."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from seismoflow.storage.location import open_root
from seismoflow.storage.tables import (
    append_rows,
    compact_table,
    part_names,
    read_records,
    read_table,
)

WRITER = """
import sys
import pandas as pd
from seismoflow.storage.tables import append_rows, compact_table

location, first = sys.argv[1], int(sys.argv[2])
i = first
while True:
    rows = pd.DataFrame({
        "provider": ["p"] * 3, "network": ["XX"] * 3, "station": [f"S{i}"] * 3,
        "location": [""] * 3, "channel": ["HHZ", "HHN", "HHE"], "start_ns": [i] * 3,
        "end_ns": [i + 1] * 3, "status": ["data"] * 3, "bytes": [i] * 3,
    })
    append_rows(location, "fetch_requests", rows)
    print(i, flush=True)  # committed: the part is in place
    i += 1
    if i % 5 == 0:
        compact_table(location, "fetch_requests")
"""


def test_killed_table_writers_lose_no_committed_row(tmp_path: Path) -> None:
    location = str(tmp_path / "s.zarr")
    open_root(location)
    rng = random.Random(11)
    committed: set[int] = set()
    first = 0
    for _ in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, location, str(first)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        # let it write a while (imports take most of a second), then kill it mid-write
        first_line = proc.stdout.readline()
        assert first_line.strip()
        committed.add(int(first_line))
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        committed |= {int(line) for line in out.split()}
        table = read_table(location, "fetch_requests")  # readable after every kill
        have = set(table["start_ns"].astype(int))
        assert committed <= have, sorted(committed - have)[:5]
        assert len(table) == 3 * len(have)  # one row per key, whatever was compacted
        first = max(have) + 1
    assert len(committed) > 20


def test_rows_replace_by_key_and_survive_compaction(tmp_path: Path) -> None:
    location = str(tmp_path / "s.zarr")
    open_root(location)
    base = {"provider": "p", "network": "XX", "location": "", "channel": "HHZ", "end_ns": 2}
    for i in range(8):
        append_rows(
            location,
            "fetch_requests",
            pd.DataFrame([{**base, "station": f"S{i % 3}", "start_ns": 1, "bytes": i}]),
        )
    assert len(part_names(location, "fetch_requests")) == 8
    before = read_table(location, "fetch_requests")
    # the rows without pandas: the same, in the same order
    assert read_records(location, "fetch_requests") == before.to_dict("records")
    assert compact_table(location, "fetch_requests") == 8
    after = read_table(location, "fetch_requests")
    assert after.equals(before) and list(after["bytes"]) == [6, 7, 5]  # the last of each key
    assert len(part_names(location, "fetch_requests")) == 1
