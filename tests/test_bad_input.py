"""Bad input gets a clear outcome and never stops a run.

Every case is built from real recordings of the shared archive (copied, truncated, corrupted,
clipped or re-labelled in a temp folder), next to untouched real files that must still be
ingested.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import obspy
import pandas as pd
import pytest
from seismoflow.storage.continuous import read_pieces
from seismoflow.storage.location import open_root
from seismoflow.storage.schema import Flag
from seismoflow.storage.tables import read_table

from seismoflow.archive.ingest import (
    ingest_batch,
    plan_ingest,
    prepare_store,
    record_continuous,
    record_problems,
    summarize_units,
)
from seismoflow.ids import ChannelId
from seismoflow.settings import Settings
from seismoflow.times import to_ns

pytestmark = pytest.mark.data

SMALL = "2019/CN/WSLR/HHE.D/CN.WSLR..HHE.D.2019.133"
DAYLONG = "2015/GR/FUR/BHN.D/GR.FUR..BHN.D.2015.361"


def _sds_copy(archive: Path, rel: str, root: Path, new_rel: str | None = None) -> Path:
    dst = root / (new_rel or rel)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(archive / "sds" / rel, dst)
    return dst


def _flat_vfp(archive: Path) -> str:
    for path in sorted((archive / "sds").glob("*/UW/VFP/EHZ.D/*")):
        data = obspy.read(str(path))[0].data
        if (data == data[0]).all():
            return str(path.relative_to(archive / "sds"))
    raise AssertionError("the archive README lists flat UW.VFP..EHZ days")


def _ingest(sds: Path, location: str, stations: Path | None = None) -> dict:
    settings = Settings(store=location)
    plan = plan_ingest(sds, stations, None)
    record_problems(location, plan.problems, "scan")
    plan = prepare_store(location, plan, settings)
    results = ingest_batch(location, plan.units, settings)
    record_continuous(location, results)
    summary = summarize_units(results)
    summary["scan_problems"] = len(plan.problems)
    return summary


@pytest.fixture()
def damaged(archive: Path, tmp_path: Path) -> tuple[Path, str, dict]:
    sds = tmp_path / "sds"
    good = _sds_copy(archive, SMALL, sds)
    # truncated: the last record cut short
    trunc = _sds_copy(archive, DAYLONG, sds)
    raw = trunc.read_bytes()
    trunc.write_bytes(raw[: len(raw) - 1500])
    # corrupt: garbage inside the data of record 3 of another real file
    rel = "2019/CN/WSLR/HHN.D/CN.WSLR..HHN.D.2019.133"
    corrupt = _sds_copy(archive, rel, sds)
    raw = bytearray(corrupt.read_bytes())
    raw[2 * 4096 + 200 : 2 * 4096 + 3000] = np.random.default_rng(1).bytes(2800)
    corrupt.write_bytes(bytes(raw))
    # not miniSEED at all, under an SDS name
    junk = sds / "2019/CN/WSLR/HHZ.D/CN.WSLR..HHZ.D.2019.133"
    junk.parent.mkdir(parents=True, exist_ok=True)
    junk.write_bytes(b"this is not miniSEED" * 300)
    # invalid station code in the SDS name: must never become a group name
    _sds_copy(archive, SMALL, sds, "2019/CN/W@LR/HHE.D/CN.W@LR..HHE.D.2019.133")
    _sds_copy(archive, SMALL, sds, "2019/CN/W..LR/HHE.D/CN.W..LR..HHE.D.2019.133")
    # flat (dead) channel: real
    _sds_copy(archive, _flat_vfp(archive), sds)
    location = str(tmp_path / "store.zarr")
    summary = _ingest(sds, location, archive / "stations.xml.gz")
    return (
        tmp_path,
        location,
        {"good": good, "trunc": trunc, "corrupt": corrupt, "junk": junk, "summary": summary},
    )


def test_one_bad_file_never_fails_the_run(damaged: tuple[Path, str, dict]) -> None:
    _, location, cases = damaged
    summary = cases["summary"]
    assert summary.get("units_failed", 0) == 0
    st = obspy.read(str(cases["good"]))
    pieces = read_pieces(
        open_root(location, "r"),
        ChannelId.parse(st[0].id),
        to_ns(st[0].stats.starttime),
        to_ns(st[0].stats.endtime),
    )
    assert np.array_equal(np.concatenate([p.data for p in pieces]), st[0].data)


def test_each_problem_is_quarantined_with_its_reason(damaged: tuple[Path, str, dict]) -> None:
    _, location, cases = damaged
    q = read_table(location, "quarantine")
    by_source = q.groupby("source")["reason"].apply(list).to_dict()
    assert any("truncated miniSEED" in r for r in by_source[str(cases["trunc"])])
    assert any(
        "corrupt miniSEED record" in r or "decoder warning" in r
        for r in by_source[str(cases["corrupt"])]
    )
    assert any("unreadable waveform file" in r for r in by_source[str(cases["junk"])])
    bad_code = [s for s in by_source if "W@LR" in s]
    assert bad_code and "invalid station code 'W@LR'" in by_source[bad_code[0]][0]
    dots = [s for s in by_source if "W..LR" in s]
    assert dots and "is not NET.STA.LOC.CHA" in by_source[dots[0]][0]
    assert cases["summary"]["quarantined"] + cases["summary"]["scan_problems"] >= 4
    # the invalid code named nothing in the store
    root = open_root(location, "r")
    names = list(root["continuous"].group_keys())  # type: ignore[union-attr]
    assert not [k for k in names if "W..LR" in k or "W@LR" in k]


def test_damaged_files_keep_their_good_records(
    archive: Path, damaged: tuple[Path, str, dict]
) -> None:
    _, location, cases = damaged
    days = read_table(location, "channel_days")
    days["flags"] = days["flags"].astype(int)
    row = days[days.channel == "GR.FUR..BHN"].iloc[0]
    assert row["flags"] & Flag.CORRUPT_RECORDS
    source = obspy.read(str(archive / "sds" / DAYLONG))[0]
    n = int(row.n_samples)
    assert 0.95 * source.stats.npts < n < source.stats.npts
    pieces = read_pieces(
        open_root(location, "r"),
        ChannelId.parse("GR.FUR..BHN"),
        to_ns(source.stats.starttime),
        to_ns(source.stats.endtime),
    )
    got = np.concatenate([p.data for p in pieces])
    assert np.array_equal(got, source.data[: got.size])  # a prefix, sample-identical
    corrupt = days[days.channel == "CN.WSLR..HHN"].iloc[0]
    assert corrupt["flags"] & Flag.CORRUPT_RECORDS
    flat = days[days.channel == "UW.VFP..EHZ"].iloc[0]
    assert flat["flags"] & Flag.FLAT


def _loose_folder(archive: Path, tmp_path: Path) -> tuple[Path, obspy.Trace]:
    """A folder of miniSEED files (not SDS) cut from one real trace."""
    tr = obspy.read(str(archive / "sds" / DAYLONG))[0]
    tr.trim(tr.stats.starttime, tr.stats.starttime + 3600)
    folder = tmp_path / "loose"
    folder.mkdir()
    a = tr.copy().trim(tr.stats.starttime, tr.stats.starttime + 1800)
    a.write(str(folder / "a.mseed"), format="MSEED")
    # overlaps a's last 10 minutes with samples that disagree
    b = tr.copy().trim(tr.stats.starttime + 1200, tr.stats.starttime + 2400)
    b.data = b.data + 7
    b.write(str(folder / "b.mseed"), format="MSEED")
    # the same channel at half the rate, later in the day
    c = tr.copy().trim(tr.stats.starttime + 3000, tr.stats.starttime + 3600)
    c.data = c.data[::2].copy()
    c.stats.sampling_rate = tr.stats.sampling_rate / 2
    c.write(str(folder / "c.mseed"), format="MSEED")
    # a real trace whose header carries an invalid station code
    d = tr.copy()
    d.stats.station = "../x"
    d.write(str(folder / "d.mseed"), format="MSEED")
    # clipped: the real trace clipped at 40% of its peak
    e = tr.copy()
    e.stats.station = "CLIP"
    peak = int(np.abs(e.data).max() * 0.4)
    e.data = np.clip(e.data, -peak, peak).astype(np.int32)
    e.write(str(folder / "e.mseed"), format="MSEED")
    # SAC with non-integer samples: cannot be stored as counts
    f = tr.copy()
    f.stats.station = "FLT"
    f.data = f.data.astype(np.float32) * 0.5 + 0.25
    f.write(str(folder / "f.sac"), format="SAC")
    return folder, tr


def test_overlaps_mixed_rates_clipping_and_codes(archive: Path, tmp_path: Path) -> None:
    folder, tr = _loose_folder(archive, tmp_path)
    location = str(tmp_path / "store.zarr")
    summary = _ingest(folder, location)
    days = read_table(location, "channel_days")
    days["flags"] = days["flags"].astype(int)
    fur = days[days.channel == "GR.FUR..BHN"].iloc[0]
    assert fur["flags"] & Flag.OVERLAP_CONFLICT and fur["flags"] & Flag.MIXED_RATES
    assert fur["flags"] & Flag.NO_METADATA
    clip = days[days.channel == "GR.CLIP..BHN"].iloc[0]
    assert clip["flags"] & Flag.CLIPPED and not fur["flags"] & Flag.CLIPPED
    q = read_table(location, "quarantine")
    reasons = " | ".join(q.reason)
    assert "overlap with differing samples" in reasons
    assert "mixed sampling rates" in reasons
    assert "invalid station code '../x'" in reasons
    assert "not integer counts" in reasons
    assert summary["quarantined"] + summary["scan_problems"] >= 4
    # earlier samples kept through the conflicting overlap, later b samples after it
    pieces = read_pieces(
        open_root(location, "r"),
        ChannelId.parse("GR.FUR..BHN"),
        to_ns(tr.stats.starttime),
        to_ns(tr.stats.starttime + 2400),
    )
    got = np.concatenate([p.data for p in pieces])
    n_a = int(1800 * 20) + 1
    assert np.array_equal(got[:n_a], tr.data[:n_a])
    assert np.array_equal(got[n_a:], tr.data[n_a : got.size] + 7)
    assert not (pd.Series(q.source).str.contains("/../", regex=False)).any()


def test_new_rate_on_an_existing_channel_is_quarantined(archive: Path, tmp_path: Path) -> None:
    """A later run bringing another rate for a stored channel does not fail."""
    tr = obspy.read(str(archive / "sds" / DAYLONG))[0]
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    early = tr.copy().trim(tr.stats.starttime, tr.stats.starttime + 600)
    early.write(str(first / "early.mseed"), format="MSEED")
    late = tr.copy().trim(tr.stats.starttime + 3600, tr.stats.starttime + 4200)
    late.data = late.data[::2].copy()
    late.stats.sampling_rate = tr.stats.sampling_rate / 2
    late.write(str(second / "late.mseed"), format="MSEED")
    location = str(tmp_path / "store.zarr")
    _ingest(first, location)
    summary = _ingest(second, location)
    assert summary.get("units_failed", 0) == 0 and summary["flags"].get("mixed_rates") == 1
    q = read_table(location, "quarantine")
    assert q.reason.str.contains("mixed sampling rates").any()
    root = open_root(location, "r")
    assert root["continuous/GR.FUR..BHN@20hz"].attrs["sampling_rate"] == 20.0  # type: ignore[index]
    kept = read_pieces(
        root,
        ChannelId.parse("GR.FUR..BHN"),
        to_ns(tr.stats.starttime),
        to_ns(tr.stats.starttime + 600),
    )
    assert np.array_equal(np.concatenate([p.data for p in kept]), early.data)


def test_separate_runs_over_one_channel_day_merge(archive: Path, tmp_path: Path) -> None:
    """Files of one channel-day ingested in different runs add up; a re-read file replaces
    its own earlier samples; a re-run of unchanged files is skipped."""
    tr = obspy.read(str(archive / "sds" / DAYLONG))[0]
    t0 = tr.stats.starttime
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    tr.slice(t0, t0 + 600).write(str(one / "a.mseed"), format="MSEED")
    tr.slice(t0 + 1200, t0 + 1800).write(str(two / "b.mseed"), format="MSEED")
    location = str(tmp_path / "store.zarr")
    ch = ChannelId.parse("GR.FUR..BHN")

    def stored() -> np.ndarray:
        pieces = read_pieces(open_root(location, "r"), ch, to_ns(t0), to_ns(t0 + 1800))
        return np.concatenate([p.data for p in pieces])

    _ingest(one, location)
    _ingest(two, location)
    expect = np.concatenate([tr.slice(t0, t0 + 600).data, tr.slice(t0 + 1200, t0 + 1800).data])
    assert np.array_equal(stored(), expect)
    assert _ingest(two, location)["units_skipped"] == 1
    changed = tr.slice(t0 + 1200, t0 + 1500)  # b shrinks: its old samples must go
    changed.write(str(two / "b.mseed"), format="MSEED")
    summary = _ingest(two, location)
    assert summary["units_written"] == 1
    expect = np.concatenate([tr.slice(t0, t0 + 600).data, changed.data])
    assert np.array_equal(stored(), expect)
