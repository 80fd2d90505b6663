"""Resampling onto an exact grid (seeded synthetic numerics)."""

from fractions import Fraction

import numpy as np
import pytest
from obspy.signal.interpolation import lanczos_interpolation

from seismoflow.signal import LANCZOS_A, lanczos_phases, resample_pieces
from seismoflow.times import NS_PER_S

T0 = 1_600_000_000 * NS_PER_S


def sine(rate: float, n: int, freq: float, start_s: float = 0.0) -> np.ndarray:
    t = start_s + np.arange(n) / rate
    return np.sin(2 * np.pi * freq * t)


def test_upsampling_matches_the_continuous_signal() -> None:
    x = sine(20.0, 1000, 1.3)  # 0 .. 49.95 s
    out = resample_pieces([(T0, 20.0, x)], T0 + 5 * NS_PER_S, 100.0, 5000)
    expected = sine(100.0, 5000, 1.3, start_s=5.0)
    assert out.dtype == np.float32
    assert np.max(np.abs(out[:4000] - expected[:4000])) < 1e-2
    # Target samples after the piece's last sample (t = 49.95 s) stay NaN.
    assert np.isnan(out[4496:]).all() and not np.isnan(out[:4496]).any()


def test_downsampling_filters_aliases() -> None:
    rate = 500.0
    low = sine(rate, 50_000, 2.0)
    high = sine(rate, 50_000, 80.0)  # above the 40 Hz target Nyquist: must vanish
    out = resample_pieces([(T0, rate, low + high)], T0 + 10 * NS_PER_S, 80.0, 4000)
    expected = sine(80.0, 4000, 2.0, start_s=10.0)
    assert np.max(np.abs(out - expected)) < 0.02


def test_gaps_become_nan_never_zero() -> None:
    a = sine(100.0, 1000, 1.0)
    b = sine(100.0, 1000, 1.0, start_s=15.0)
    out = resample_pieces([(T0, 100.0, a), (T0 + 15 * NS_PER_S, 100.0, b)], T0, 50.0, 1250)
    assert np.isnan(out[510:740]).all()  # 10.2 s .. 14.8 s: no data
    assert not np.isnan(out[:495]).any() and not np.isnan(out[755:]).any()


def test_sub_sample_start_is_honoured() -> None:
    x = sine(100.0, 3000, 0.7)
    shift_ns = 3_300_000  # 3.3 ms
    out = resample_pieces([(T0 + shift_ns, 100.0, x)], T0 + NS_PER_S, 100.0, 2000)
    expected = sine(100.0, 2000, 0.7, start_s=1.0 - shift_ns / NS_PER_S)
    assert np.max(np.abs(out - expected)) < 1e-3


@pytest.mark.parametrize("rate", [20.0, 40.0, 50.0, 100.0, 200.0, 250.0, 500.0, 99.5])
@pytest.mark.parametrize("offset", [0.0, 0.37, 3.999999])
def test_lanczos_phases_equal_obspys_interpolation(rate: float, offset: float) -> None:
    """The per-phase kernels give ObsPy's Lanczos values, ends (zero beyond) included."""
    x = np.random.default_rng(1).standard_normal(int(rate * 30))
    step = Fraction(str(rate)) / 100
    n = int((x.size - 1 - offset) / float(step)) + 1
    expected = lanczos_interpolation(
        x, 0.0, 1.0, offset, float(step), n, a=LANCZOS_A, window="lanczos"
    )
    got = lanczos_phases(x, offset, step, n)
    assert np.max(np.abs(got - expected)) < 1e-9
