"""Channel-day assembly: grid placement and every defect flagged (seeded synthetic numerics)."""

import numpy as np
from seismoflow.storage.schema import Flag

from seismoflow.archive.assemble import assemble_day, is_clipped, is_flat
from seismoflow.archive.sources import Segment
from seismoflow.ids import ChannelId
from seismoflow.times import NS_PER_S, to_ns

CH = ChannelId("XX", "TEST", "", "HHZ")
DAY = to_ns("2020-01-01")
RNG = np.random.default_rng(42)


def seg(
    start_s: float, n: int, rate: float = 100.0, data: np.ndarray | None = None, source: str = "a"
) -> Segment:
    values = data if data is not None else RNG.integers(-1000, 1000, n).astype(np.int32)
    return Segment(CH, DAY + round(start_s * NS_PER_S), rate, values, source)


def full(day) -> tuple[np.ndarray, np.ndarray]:
    data = np.zeros(day.offset + day.data.size, dtype=np.int32)
    mask = np.zeros_like(data, dtype=bool)
    data[day.offset :] = day.data
    mask[day.offset :] = day.mask
    return data, mask


def test_gap_stays_masked_not_zero() -> None:
    a, b = seg(10.005, 500), seg(20.005, 300)
    day = assemble_day(CH, DAY, [a, b], 100.0)
    data, mask = full(day)
    assert day.t0_ns == DAY + 5_000_000  # grid phase of the first segment
    assert day.offset == 1000
    assert np.array_equal(data[1000:1500], a.data) and np.array_equal(data[2000:2300], b.data)
    assert mask[1000:1500].all() and not mask[1500:2000].any() and mask[2000:2300].all()
    assert day.flags & Flag.GAPS and day.n_samples == 800


def test_identical_overlap_merges() -> None:
    values = RNG.integers(-50, 50, 1000).astype(np.int32)
    a = seg(0, 600, data=values[:600])
    b = seg(5, 500, data=values[500:], source="b")
    day = assemble_day(CH, DAY, [a, b], 100.0)
    assert day.flags & Flag.OVERLAP_IDENTICAL and not day.flags & Flag.OVERLAP_CONFLICT
    assert np.array_equal(day.data, values) and not day.problems


def test_conflicting_overlap_keeps_first_and_reports() -> None:
    a = seg(0, 600)
    b_values = RNG.integers(2000, 3000, 500).astype(np.int32)
    b = seg(5, 500, data=b_values, source="b")
    day = assemble_day(CH, DAY, [a, b], 100.0)
    assert day.flags & Flag.OVERLAP_CONFLICT
    assert np.array_equal(day.data[:600], a.data)
    assert np.array_equal(day.data[600:1000], b_values[100:])
    assert len(day.problems) == 1 and "differing samples" in day.problems[0].reason
    assert day.problems[0].npts == 100


def test_mixed_rates_quarantined() -> None:
    day = assemble_day(CH, DAY, [seg(0, 400), seg(10, 100, rate=50.0, source="b")], 100.0)
    assert day.flags & Flag.MIXED_RATES
    assert day.n_samples == 400
    assert "mixed sampling rates" in day.problems[0].reason and day.problems[0].source == "b"


def test_off_grid_start_keeps_exact_time() -> None:
    a, b = seg(0, 100), seg(10.0017, 100)  # 1.7 ms off the 10 ms grid
    day = assemble_day(CH, DAY, [a, b], 100.0)
    assert day.flags & Flag.TIMING_SHIFT
    second = day.segments[1]
    assert second["start_ns"] == b.start_ns and second["residual_ns"] == 1_700_000


def test_trim_to_day_and_wrong_channel() -> None:
    before = seg(-1.0, 200)  # starts 1 s before midnight
    other = Segment(ChannelId("XX", "OTHER", "", "HHZ"), DAY, 100.0, np.ones(10, np.int32), "c")
    day = assemble_day(CH, DAY, [before, other], 100.0)
    assert day.n_samples == 100 and np.array_equal(day.data, before.data[100:])
    assert any("SDS name and record header disagree" in p.reason for p in day.problems)


def test_flat_and_clipped() -> None:
    assert is_flat(np.full(100, 7, np.int32)) and not is_flat(np.arange(3))
    x = (1000 * np.sin(np.linspace(0, 60, 6000))).astype(np.int32)
    assert not is_clipped(x, 1e-3)
    assert is_clipped(np.clip(x, -600, 600), 1e-3)
    day = assemble_day(CH, DAY, [seg(0, 500, data=np.full(500, 3, np.int32))], 100.0)
    assert day.flags & Flag.FLAT
