"""The README's "Reading a store from Python" runs as written, against a real store."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import obspy
import pytest
import xarray as xr

from seismoflow.models.predict import write_predictions
from tests.conftest import REPO, copy_store
from tests.test_predict import tiny_predictions

HEADING = "## Reading a store from Python"


def readme_blocks(heading: str = HEADING) -> list[str]:
    """The fenced ``python`` blocks of the README section under ``heading``."""
    text = (REPO / "README.md").read_text()
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + len(heading) + 2)
    section = text[start : end if end > 0 else None]
    return re.findall(r"^```python\n(.*?)^```$", section, flags=re.S | re.M)


def test_the_section_has_code() -> None:
    blocks = readme_blocks()
    assert len(blocks) >= 4 and all("store_path" not in b for b in blocks[1:])
    assert "open_store(store_path)" in blocks[0]


@pytest.mark.slow
@pytest.mark.data
def test_readme_reading_section_runs(small_store: tuple[Path, dict], tmp_path: Path) -> None:
    """Every block, in order, in one namespace, on the small real subset with a prediction
    version added (as ``seismoflow predict`` writes one)."""
    path = str(copy_store(small_store[0], tmp_path / "s.zarr"))
    write_predictions(
        path,
        tiny_predictions(),
        {"model_id": "readme", "code_version": "x", "flow_run_id": "r", "created_at": "t"},
    )
    ns: dict[str, Any] = {"store_path": path}
    for block in readme_blocks():
        exec(compile(block, "README.md", "exec"), ns)  # noqa: S102 - the README's own code
    assert ns["info"]["n_channels"] > 0
    assert isinstance(ns["st"], obspy.Stream) and len(ns["aug"]) == 2
    assert isinstance(ns["da"], xr.DataArray) and ns["recorded"] == 30_000
    assert ns["moved"][0] == 1  # the second record of UW.AUG..EHZ is 133 us off the first's grid
    assert len(ns["events"]) == len(ns["catalog"]) > 0
    hood = ns["hood"].get_contents()["channels"]
    assert "UW.HOOD..HHZ" in hood and all(c.startswith("UW.HOOD..HH") for c in hood)
    assert ns["quakes"].sizes["trace"] > 0 and ns["first"].ndim == 1
    assert ns["model_id"] == "readme"
