"""``seismoflow migrate``: a schema-2 store of the real archive rewritten as schema 3, every
sample identical; every other command on a schema-2 store says to run it."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from seismoflow.storage.events import WINDOW_GROUPS, written_traces
from seismoflow.storage.location import open_root
from seismoflow.storage.tables import read_table

import seismoflow
from seismoflow.errors import StoreError
from tests.conftest import cli_env, seismoflow_cmd
from tests.schema2 import write_schema2

pytestmark = [pytest.mark.slow, pytest.mark.data]


def _shards(store: Path) -> dict[str, str]:
    """sha256 of every stored object of the continuous arrays (shards and documents)."""
    base = store / "continuous"
    return {
        str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(base.rglob("c.*"))
    }


def _windows(store: Path) -> dict[str, Any]:
    root = open_root(str(store), "r")
    out: dict[str, Any] = {}
    for name in WINDOW_GROUPS:
        group = root[name]
        assert isinstance(group, zarr.Group)
        for var, arr in group.arrays():
            out[f"{name}/{var}"] = np.asarray(arr[...])
        out[f"{name}/ledger"] = written_traces(str(store), group)
    for name in WINDOW_GROUPS:
        values = root[f"features/{name}/values"]
        assert isinstance(values, zarr.Array)
        out[f"features/{name}"] = np.asarray(values[...])
    return out


def test_schema2_store_migrates_with_every_sample(
    featured_store: tuple[Path, dict, list[str]], prefect_server: str, tmp_path: Path
) -> None:
    source = featured_store[0]
    old = tmp_path / "old.zarr"
    write_schema2(str(source), str(old))
    # every command but migrate refuses the old store and names the command that fixes it
    with pytest.raises(StoreError, match="seismoflow migrate"):
        seismoflow.open_store(str(old)).info()
    proc = subprocess.run(
        [*seismoflow_cmd(), "info", "--store", str(old)],
        env=cli_env(prefect_server),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 3 and f"seismoflow migrate --store {old}" in proc.stderr

    proc = subprocess.run(
        [*seismoflow_cmd(), "migrate", "--store", str(old), "--json"],
        env=cli_env(prefect_server),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "old.zarr.schema2").is_dir()  # the schema-2 store is kept beside it
    migrated = old
    # Shards are byte for byte those the ingest wrote: every sample identical.
    assert _shards(migrated) == _shards(source)
    ledger = read_table(str(migrated), "channel_days")
    assert ledger.equals(read_table(str(source), "channel_days"))
    for name in ("catalog", "channels", "quarantine"):
        assert read_table(str(migrated), name).equals(read_table(str(source), name)), name
    ours, theirs = _windows(migrated), _windows(source)
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert np.array_equal(ours[key], value, equal_nan=True), key
        elif isinstance(value, np.ndarray):
            assert np.array_equal(ours[key], value), key
        else:
            assert ours[key] == value, key
    info = seismoflow.open_store(str(migrated)).info()
    assert info["n_samples"] == seismoflow.open_store(str(source)).info()["n_samples"]
