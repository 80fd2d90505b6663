"""Hostile archive input (issue 13): one bad record costs only itself, never a hang.

Real day files of the shared archive are copied into a temp SDS tree and one record of each
is corrupted in its header (or the file truncated). Every other record must be stored
sample-identical to ObsPy's reading of the uncorrupted records, the bad one quarantined
alone with its byte offset and reason, ``info`` must count exactly the valid samples, and
planning must stay within the files' own days whatever year a header claims. Also: hidden
files are counted in the run summary, a model directory cannot name a file outside itself,
and ``info`` describes a store a killed run left partial.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import obspy
import pytest
from obspy.io.mseed.util import get_record_information
from seismoflow.storage.continuous import read_pieces
from seismoflow.storage.location import open_root, store_state
from seismoflow.storage.tables import read_table

from seismoflow.archive.ingest import (
    ingest_batch,
    plan_ingest,
    plan_summary,
    prepare_store,
    record_continuous,
    record_problems,
    summarize_units,
)
from seismoflow.archive.records import read_mseed_bytes, sds_day
from seismoflow.archive.sources import Problem
from seismoflow.ids import ChannelId
from seismoflow.inspect import store_info
from seismoflow.models import registry
from seismoflow.settings import Settings
from seismoflow.times import NS_PER_DAY, to_ns
from tests.conftest import cli_env, seismoflow_cmd

RECLEN = 4096
Edit = Callable[[bytearray, int], None]


def _put(fmt: str, pos: int, *values: int) -> Edit:
    """Write ``values`` at byte ``pos`` of the fixed header (big-endian, as the archive is)."""

    def edit(raw: bytearray, base: int) -> None:
        raw[base + pos : base + pos + struct.calcsize(fmt)] = struct.pack(fmt, *values)

    return edit


def _negate_rate(raw: bytearray, base: int) -> None:
    """Rate factor made negative: SEED reads it as a period, 1/|factor| Hz."""
    factor = struct.unpack(">h", raw[base + 32 : base + 34])[0]
    raw[base + 32 : base + 36] = struct.pack(">hh", -abs(factor), 1)


def _garble_data(raw: bytearray, base: int) -> None:
    """Seeded random bytes over most of the record's Steim-2 frames (libmseed refuses them)."""
    raw[base + 200 : base + 3000] = np.random.default_rng(1).bytes(2800)


def _shift_day(raw: bytearray, base: int) -> None:
    doy = struct.unpack(">H", raw[base + 22 : base + 24])[0]
    raw[base + 22 : base + 24] = struct.pack(">H", doy - 100 if doy > 100 else doy + 100)


# kind: (real day file, record index (negative from the end), header edit, reason)
HEADER_CASES: dict[str, tuple[str, int, Edit, str]] = {
    "rate_zero_first_record": (
        "2009/AV/RD02/BHE.D/AV.RD02..BHE.D.2009.094", 0, _put(">h", 32, 0),
        "impossible sampling rate 0 Hz",
    ),
    "negative_rate": (
        "2014/XT/AAE40/HHE.D/XT.AAE40..HHE.D.2014.194", 3, _negate_rate,
        "where the file's other records have 100 Hz",
    ),
    "absurd_rate": (
        "2017/FR/OGSA/HHE.D/FR.OGSA.00.HHE.D.2017.336", 2,
        _put(">hh", 32, 30000, 30000),
        "impossible sampling rate 9e+08 Hz",
    ),
    "year_9999_last_record": (
        "2017/Z3/A034A/HHE.D/Z3.A034A..HHE.D.2017.292", -1, _put(">H", 20, 9999),
        "impossible start time 9999-",
    ),
    "year_9999_middle_record_of_a_day_long_file": (
        "2015/GR/FUR/BHN.D/GR.FUR..BHN.D.2015.361", 200, _put(">H", 20, 9999),
        "impossible start time 9999-",
    ),
    "year_1960": (
        "2017/ZS/D091/HHE.D/ZS.D091..HHE.D.2017.292", 4, _put(">H", 20, 1960),
        "impossible start time 1960-",
    ),
    "start_outside_the_sds_day": (
        "2017/ZS/D092/HHE.D/ZS.D092..HHE.D.2017.292", 5, _shift_day,
        "outside the file's SDS day 2017-10-19",
    ),
    "npts_beyond_the_record": (
        "2018/CI/SCZ2/BHE.D/CI.SCZ2..BHE.D.2018.009", 6, _put(">H", 30, 60000),
        "60000 samples claimed, more than a 4096-byte record can hold",
    ),
    "undecodable_record_data": (
        "2019/CN/WSLR/HHN.D/CN.WSLR..HHN.D.2019.133", 2, _garble_data, "undecodable data",
    ),
}  # fmt: skip
TRUNCATED = "2011/CC/OBSR/BHE.D/CC.OBSR..BHE.D.2011.176"
UNTOUCHED = "2017/ZS/D095/HHN.D/ZS.D095..HHN.D.2017.292"
# The same real records as a loose (non-SDS) file, its last record claiming the year 9999.
LOOSE = "2011/CC/PANH/BHE.D/CC.PANH..BHE.D.2011.176"
N_CORRUPTION_KINDS = len(HEADER_CASES) + 2  # + truncated last record + loose year 9999


def _without(raw: bytes, offsets: list[int]) -> obspy.Stream:
    """ObsPy's reading of the uncorrupted records: ``raw`` less the records at ``offsets``."""
    kept = b"".join(raw[o : o + RECLEN] for o in range(0, len(raw), RECLEN) if o not in offsets)
    return obspy.read(io.BytesIO(kept), format="MSEED")


def _corrupt_copy(src: Path, dst: Path, index: int, edit: Edit) -> tuple[int, obspy.Stream]:
    """Copy ``src`` to ``dst`` with record ``index`` edited; its offset and the expected
    (uncorrupted, other records) stream."""
    raw = src.read_bytes()
    assert get_record_information(str(src))["byteorder"] == ">", "edits assume big-endian"
    offset = (index % (len(raw) // RECLEN)) * RECLEN
    bad = bytearray(raw)
    edit(bad, offset)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(bytes(bad))
    return offset, _without(raw, [offset])


@pytest.fixture(scope="module")
def hostile(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A temp SDS tree of real day files, each corrupted one way, plus hidden files; its
    expected streams and bad-record offsets."""
    tmp = tmp_path_factory.mktemp("hostile")
    sds = tmp / "sds"
    cases: dict[str, dict[str, Any]] = {}
    for kind, (rel, index, edit, reason) in HEADER_CASES.items():
        offset, expect = _corrupt_copy(archive / "sds" / rel, sds / rel, index, edit)
        cases[kind] = {"path": sds / rel, "offset": offset, "expect": expect, "reason": reason}
    raw = (archive / "sds" / TRUNCATED).read_bytes()
    (sds / TRUNCATED).parent.mkdir(parents=True)
    (sds / TRUNCATED).write_bytes(raw[: len(raw) - 1500])
    cases["truncated_last_record"] = {
        "path": sds / TRUNCATED,
        "offset": len(raw) - RECLEN,
        "expect": _without(raw, [len(raw) - RECLEN]),
        "reason": "truncated miniSEED",
    }
    loose = sds / "loose" / "panh.mseed"
    offset, expect = _corrupt_copy(archive / "sds" / LOOSE, loose, -1, _put(">H", 20, 9999))
    cases["loose_file_year_9999"] = {
        "path": loose, "offset": offset, "expect": expect, "reason": "impossible start time 9999-"
    }  # fmt: skip
    (sds / UNTOUCHED).parent.mkdir(parents=True)
    shutil.copyfile(archive / "sds" / UNTOUCHED, sds / UNTOUCHED)
    # hidden: a hidden copy of a real day file and an editor's dot-file; never ingested
    hidden = sds / "2017/ZS/D095/HHN.D/.ZS.D095..HHN.D.2017.292"
    shutil.copyfile(archive / "sds" / UNTOUCHED, hidden)
    (sds / "2017" / ".notes").write_text("not waveforms")
    untouched = obspy.read(str(archive / "sds" / UNTOUCHED))
    return {
        "sds": sds,
        "cases": cases,
        "untouched": untouched,
        "hidden": sorted([str(hidden), str(sds / "2017" / ".notes")]),
        "tmp": tmp,
    }


def _ingest(sds: Path, location: str) -> dict[str, Any]:
    settings = Settings(store=location)
    plan = plan_ingest(sds, None, None)
    record_problems(location, plan.problems, "scan")
    plan = prepare_store(location, plan, settings)
    results = ingest_batch(location, plan.units, settings)
    record_continuous(location, results)
    return {**plan_summary(plan), **summarize_units(results)}


@pytest.fixture(scope="module")
def ingested(hostile: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    location = str(hostile["tmp"] / "store.zarr")
    return location, _ingest(hostile["sds"], location)


def _stored(location: str, tr: obspy.Trace) -> np.ndarray:
    pieces = read_pieces(
        open_root(location, "r"),
        ChannelId.parse(tr.id),
        to_ns(tr.stats.starttime),
        to_ns(tr.stats.endtime),
    )
    return np.concatenate([p.data for p in pieces]) if pieces else np.array([], np.int32)


pytestmark = pytest.mark.data


def test_the_private_obspy_reader_still_reads_as_obspy_does(archive: Path) -> None:
    """``read_mseed_bytes`` wraps ObsPy's private ``_read_mseed``: fail if that changes."""
    path = archive / "sds" / HEADER_CASES["year_9999_middle_record_of_a_day_long_file"][0]
    got, want = read_mseed_bytes(path.read_bytes()), obspy.read(str(path))
    assert [tr.id for tr in got] == [tr.id for tr in want]
    assert all(a.stats.starttime == b.stats.starttime for a, b in zip(got, want, strict=True))
    assert all(np.array_equal(a.data, b.data) for a, b in zip(got, want, strict=True))


def test_the_cases_cover_every_corruption_kind(hostile: dict[str, Any]) -> None:
    assert len(hostile["cases"]) == N_CORRUPTION_KINDS == 11
    for case in hostile["cases"].values():
        assert case["expect"].count() >= 1  # each file keeps valid records to store


@pytest.mark.timeout(30)  # the year-9999 file alone made ingest run > 3 minutes
def test_every_valid_record_is_stored_sample_identical(
    hostile: dict[str, Any], ingested: tuple[str, dict[str, Any]]
) -> None:
    location, summary = ingested
    assert summary.get("units_failed", 0) == 0
    for kind, case in hostile["cases"].items():
        for tr in case["expect"]:
            got = _stored(location, tr)
            assert np.array_equal(got, tr.data), f"{kind}: {tr.id} {tr.stats.starttime}"
    for tr in hostile["untouched"]:
        assert np.array_equal(_stored(location, tr), tr.data)


def test_info_counts_exactly_the_valid_samples(
    hostile: dict[str, Any], ingested: tuple[str, dict[str, Any]]
) -> None:
    location, summary = ingested
    expected = sum(tr.stats.npts for c in hostile["cases"].values() for tr in c["expect"])
    expected += sum(tr.stats.npts for tr in hostile["untouched"])
    assert store_info(location)["n_samples"] == summary["samples_written"] == expected


def test_each_bad_record_is_quarantined_alone_with_its_offset(
    hostile: dict[str, Any], ingested: tuple[str, dict[str, Any]]
) -> None:
    location, _ = ingested
    q = read_table(location, "quarantine")
    for kind, case in hostile["cases"].items():
        rows = q[q.source == str(case["path"])]
        assert len(rows) == 1, f"{kind}: {rows.reason.tolist()}"
        row = rows.iloc[0]
        assert case["reason"] in row.reason, kind
        assert int(row.byte_offset) == case["offset"], kind
        assert f"byte {case['offset']}" in row.reason, kind
    assert not (q.source == str(hostile["sds"] / UNTOUCHED)).any()


@pytest.mark.timeout(30)
def test_planning_stays_within_the_files_days(hostile: dict[str, Any]) -> None:
    """Units only for each file's own day and the next (a record spanning midnight),
    never the days between a corrupt header's year and the file's."""
    plan = plan_ingest(hostile["sds"], None, None)
    days: dict[str, set[int]] = {}
    for unit in plan.units:
        for f in unit.files:
            days.setdefault(f.path, set()).add(unit.day_ns)
    for path, planned in days.items():
        day = sds_day(path)
        if day is not None:
            assert planned <= {day - NS_PER_DAY, day, day + NS_PER_DAY}, path
    assert len(plan.units) <= 2 * len(days)
    # a requested span bounds planning too
    day = sds_day(hostile["cases"]["year_9999_last_record"]["path"])
    assert day is not None
    within = plan_ingest(hostile["sds"], None, None, day, day + NS_PER_DAY)
    assert within.units and {u.day_ns for u in within.units} == {day}


def test_hidden_files_are_counted_and_named(
    hostile: dict[str, Any], ingested: tuple[str, dict[str, Any]]
) -> None:
    _, summary = ingested
    assert summary["skipped_hidden"] == 2
    assert sorted(summary["skipped_hidden_first"]) == hostile["hidden"]
    assert summary["files"] == N_CORRUPTION_KINDS + 1


# --- model directories: nothing outside them is read ---------------------------------


def _model_dir(tmp_path: Path, files: dict[str, str], cnn: bool = False) -> Path:
    directory = tmp_path / "models" / "20260101T000000Z-00000000"
    (directory / "features").mkdir(parents=True)
    doc = {
        "format_version": registry.FORMAT_VERSION,
        "model_id": directory.name,
        "classes": ["earthquake", "explosion"],
        "feature_models": {"files": files} if files else None,
        "cnn": {"classes": ["earthquake"]} if cnn else None,
        "files": {rel: "0" * 64 for rel in files.values()},
    }
    (directory / registry.METADATA).write_text(json.dumps(doc))
    return directory


@pytest.mark.parametrize("escape", ["../../outside.skops", "ABSOLUTE", "features/link.skops"])
def test_model_files_outside_the_directory_are_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, escape: str
) -> None:
    outside = tmp_path / "outside.skops"
    outside.write_bytes(b"would be loaded")
    name = str(outside) if escape == "ABSOLUTE" else escape
    directory = _model_dir(tmp_path, {"svm": name, "anomaly_bounds": "features/b.npz"})
    if escape.startswith("features/"):
        (directory / escape).symlink_to(outside)
    read: list[Path] = []
    monkeypatch.setattr(registry, "sha256_file", lambda p: read.append(p) or "0" * 64)
    monkeypatch.setattr(registry, "load_sklearn", lambda p: read.append(p))
    with pytest.raises(registry.ModelDirectoryError) as err:
        registry.load_bundle(directory)
    assert "outside the model directory" in str(err.value)
    assert name in str(err.value) and "seismoflow train" in str(err.value)
    assert read == []


def test_cnn_folder_and_metadata_links_out_of_the_directory_are_refused(tmp_path: Path) -> None:
    directory = _model_dir(tmp_path, {}, cnn=True)
    (tmp_path / "elsewhere").mkdir()
    (directory / "cnn").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(registry.ModelDirectoryError, match="outside the model directory"):
        registry.load_bundle(directory)
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / registry.METADATA).symlink_to(directory / registry.METADATA)
    with pytest.raises(registry.ModelDirectoryError, match="outside the model directory"):
        registry.read_metadata(linked)


# --- info on a store a killed run left behind ------------------------------------------


def test_info_describes_a_partial_store(tmp_path: Path) -> None:
    """A run killed after its scan recorded problems, before it created the store."""
    location = str(tmp_path / "store.zarr")
    assert store_state(location) == "missing"
    record_problems(location, [Problem("x.mseed", "unreadable waveform file")], "scan")
    assert store_state(location) == "partial"
    info = store_info(location)
    assert info["state"] == "partial" and info["n_quarantined"] == 1
    proc = subprocess.run(
        [*seismoflow_cmd(), "info", "--store", location, "--json"],
        env=cli_env(""),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["state"] == "partial"
    assert "partial seismoflow store" in proc.stderr and "again" in proc.stderr
    assert "no seismoflow store" not in proc.stderr


def test_a_store_written_but_not_finalized_is_unfinished(
    ingested: tuple[str, dict[str, Any]],
) -> None:
    location, _ = ingested  # the units wrote it; nothing finalized it
    assert store_state(location) == "unfinished"
    assert store_info(location)["state"] == "unfinished"


# --- the same tree through the command line -------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)  # mostly the session's Prefect server starting
def test_cli_ingest_of_the_hostile_tree(
    hostile: dict[str, Any], prefect_server: str, tmp_path: Path
) -> None:
    """``seismoflow ingest --json`` ends (bounded by the subprocess timeout), names the
    hidden files it skipped, and ``info`` counts exactly the valid samples."""
    store = tmp_path / "store.zarr"
    args = ["ingest", "--sds", str(hostile["sds"]), "--store", str(store), "--json"]
    proc = subprocess.run(
        [*seismoflow_cmd(), *args],
        env=cli_env(prefect_server),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["skipped_hidden"] == 2
    assert sorted(summary["skipped_hidden_first"]) == hostile["hidden"]
    assert summary["quarantined"] == N_CORRUPTION_KINDS
    info = subprocess.run(
        [*seismoflow_cmd(), "info", "--store", str(store), "--json"],
        env=cli_env(prefect_server),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert info.returncode == 0, info.stderr[-3000:]
    expected = sum(tr.stats.npts for c in hostile["cases"].values() for tr in c["expect"])
    expected += sum(tr.stats.npts for tr in hostile["untouched"])
    shown = json.loads(info.stdout)
    assert shown["n_samples"] == expected and shown["state"] == "final"
