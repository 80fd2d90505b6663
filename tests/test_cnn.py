"""The CNN classifier: network shapes, preprocessing, streaming, determinism, persistence,
and short trainings on the real archive (``archive_store``, read-only)."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from seismoflow.examples import event_split, list_examples, site_folds
from seismoflow.labels import CLASSES
from seismoflow.models import windows as win
from seismoflow.models.cnn import (
    CNNConfig,
    EventCNN,
    class_weights,
    cnn_site_cv,
    load_cnn,
    pick_device,
    predict_cnn,
    save_cnn,
    train_cnn,
)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: on a shared 2-core machine more threads spin and run ~20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- numerics on synthetic arrays ---------------------------------------------------------


def test_forward_takes_any_window_length_and_missing_components() -> None:
    torch.manual_seed(0)
    model = EventCNN(in_channels=3, n_classes=4, widths=(8, 12), kernel=5, hidden=6).eval()
    for n in (257, 1000, 2600):
        x = torch.randn(5, 3, n)
        mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 1, 1], [1, 0, 1], [0, 0, 0]]).float()
        with torch.no_grad():
            logits = model(x, mask)
            emb = model.embed(x, mask)
            # A missing component's samples never reach the network.
            x2 = x.clone()
            x2[mask == 0] = 1e6
            logits2 = model(x2, mask)
        assert logits.shape == (5, 4) and emb.shape == (5, 6)
        assert torch.isfinite(logits).all()
        torch.testing.assert_close(logits, logits2)


def test_preprocess_block_is_gain_free_decimates_and_masks() -> None:
    rng = np.random.default_rng(1)
    rate, n = 100.0, 13_000
    t = np.arange(n) / rate
    z = np.sin(2 * np.pi * 3.0 * t) + 0.1 * rng.standard_normal(n) + 5.0 + 0.01 * t
    block = np.full((2, 3, n), np.nan, dtype=np.float32)
    block[0, 0] = z
    block[0, 1] = 2 * z
    block[1, 0] = 1000 * z  # same signal, other gain
    block[1, 0, :3000] = np.nan  # a gap at the start
    prep = win.Preprocess(sampling_rate=20.0, band=(1.0, 8.0), components=("Z", "N", "E"))
    x, mask = win.preprocess_block(block, rate, prep)
    assert x.shape == (2, 3, 2600) and x.dtype == np.float32
    assert mask.tolist() == [[True, True, False], [True, False, False]]
    assert np.isfinite(x).all()
    assert np.all(x[0, 2] == 0) and np.all(x[1, 1:] == 0)  # missing components are zeros
    assert np.all(x[1, 0, :600] == 0)  # the gap stays zero after decimation
    # Per-trace RMS normalisation over all components keeps the Z/N ratio, drops the gain.
    np.testing.assert_allclose(x[0, 1], 2 * x[0, 0], rtol=1e-4, atol=1e-5)
    assert np.sqrt(np.mean(x[0, :2] ** 2)) == pytest.approx(1.0, rel=1e-4)
    # The 3 Hz tone passes the 1-8 Hz band; the offset and trend are gone.
    spectrum = np.abs(np.fft.rfft(x[0, 0, 300:-300]))
    freqs = np.fft.rfftfreq(2000, 1 / 20.0)
    assert freqs[spectrum.argmax()] == pytest.approx(3.0, abs=0.05)
    assert abs(float(x[0, 0, 300:-300].mean())) < 0.05


def test_log_envelopes_drop_the_gain_and_show_the_band() -> None:
    rng = np.random.default_rng(2)
    rate, n = 100.0, 13_000
    t = np.arange(n) / rate
    burst = np.exp(-(((t - 60.0) / 5.0) ** 2)) * np.sin(2 * np.pi * 3.3 * t)
    z = (burst + 0.01 * rng.standard_normal(n)).astype(np.float32)
    block = np.full((2, 3, n), np.nan, dtype=np.float32)
    block[0, 0] = z
    block[1, 0] = 5000 * z
    block[1, 0, 10_000:] = np.nan
    prep = CNNConfig(components=("Z", "N")).preprocess()
    x, mask = win.preprocess_block(block, rate, prep)
    bands = len(prep.envelope_bands)
    assert x.shape == (2, 2 * bands, 260) and mask.shape == (2, 2 * bands)
    assert mask[:, :bands].all() and not mask[:, bands:].any()
    assert np.all(x[:, bands:] == 0)
    # Gain is an offset in log amplitude, removed by the median: same picture before the gap.
    np.testing.assert_allclose(x[0, :bands, 20:180], x[1, :bands, 20:180], atol=0.02)
    assert np.all(x[1, :bands, 201:] == 0)  # the gap (from 100 s) carries nothing
    at_peak = x[0, :bands, 120]  # 60 s after the window start, at 2 Hz
    centre = [lo <= 3.3 < hi for lo, hi in prep.envelope_bands].index(True)
    assert at_peak.argmax() == centre and at_peak.max() > 1.0


def test_preprocess_refuses_rates_and_bands_it_cannot_honour() -> None:
    block = np.zeros((1, 3, 1000), dtype=np.float32)
    with pytest.raises(ValueError, match="divided by an integer"):
        win.preprocess_block(block, 100.0, win.Preprocess(30.0, (1.0, 8.0)))
    with pytest.raises(ValueError, match="band"):
        win.preprocess_block(block, 100.0, win.Preprocess(20.0, (1.0, 9.5)))


def _per_window_reference(
    block: np.ndarray, rate: float, prep: win.Preprocess, comps: tuple[str, ...] = ("Z", "N", "E")
) -> tuple[np.ndarray, np.ndarray]:
    out = [win.preprocess_block_reference(w[None], rate, prep, comps) for w in block]
    return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])


def _assert_same_input(block: np.ndarray, rate: float, prep: win.Preprocess) -> None:
    """The batched preprocessing of a block equals the reference applied window by window."""
    x, mask = win.preprocess_block(block, rate, prep)
    rx, rmask = _per_window_reference(block, rate, prep)
    assert x.dtype == np.float32 and x.shape == rx.shape
    assert mask.tolist() == rmask.tolist()
    scale = max(1.0, float(np.abs(rx).max()))
    np.testing.assert_allclose(x, rx, rtol=1e-5, atol=1e-5 * scale)


def _synthetic_block(n: int, samples: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 100.0
    walk = rng.normal(0, 1, (n, 3, samples)).cumsum(axis=-1)  # strong low frequencies
    tone = np.sin(2 * np.pi * rng.uniform(1, 8, (n, 3, 1)) * t)
    gain = 10.0 ** rng.uniform(0, 6, (n, 1, 1))
    return ((walk + 50 * tone + 1e3 * t) * gain).astype(np.float32)


@pytest.mark.parametrize("envelopes", [True, False])
def test_batched_preprocessing_equals_the_per_window_reference(envelopes: bool) -> None:
    """Edge cases: gaps, a missing component, a flat trace, an all-gap window, several
    window lengths (short ones too) and store rates (decimation factors 5, 2, 1)."""
    kw = {} if envelopes else {"envelope_bands": ()}
    for comps in (("Z",), ("Z", "N", "E")):
        prep = CNNConfig(components=comps, **kw).preprocess()  # type: ignore[arg-type]
        for rate, samples in ((100.0, 13000), (100.0, 13003), (40.0, 5200), (20.0, 2600)):
            block = _synthetic_block(9, samples)
            block[1, 0, 100:3000] = np.nan  # a gap in Z
            block[2, 1] = np.nan  # no N
            block[3, :, : samples // 2] = np.nan  # the first half missing
            block[4, 0, ::7] = np.nan  # scattered missing samples
            block[5] = np.nan  # nothing recorded
            block[6, 0] = 123.0  # flat
            block[7, :, -5:] = np.nan
            _assert_same_input(block, rate, prep)
        for samples in (1, 5, 30, 60, 200):  # short windows: padding shrinks to the window
            _assert_same_input(_synthetic_block(3, samples, seed=samples), 100.0, prep)


@pytest.mark.data
def test_batched_preprocessing_equals_the_reference_on_real_windows(archive: Path) -> None:
    """130 s of real 100 Hz vertical recordings from the archive's SDS files, with some of
    them cut short or holed, through both paths."""
    from obspy import read

    windows: list[np.ndarray] = []
    for path in sorted((archive / "sds").glob("*/*/*/HHZ.D/*"))[:40]:
        trace = read(str(path), headonly=False)[0]
        if abs(trace.stats.sampling_rate - 100.0) > 1e-6 or trace.stats.npts < 13000:
            continue
        z = trace.data[:13000].astype(np.float32)
        windows.append(np.stack([z, np.full_like(z, np.nan), np.full_like(z, np.nan)]))
        if len(windows) == 16:
            break
    assert len(windows) >= 4, "no 100 Hz HHZ day files with 130 s of data"
    block = np.stack(windows)
    block[0, 0, 4000:4500] = np.nan
    block[1, 0, 10000:] = np.nan
    for comps in (("Z",), ("Z", "N", "E")):
        _assert_same_input(block, 100.0, CNNConfig(components=comps).preprocess())


@pytest.mark.parametrize("band", [(1.0, 8.0), (1.0, 1.4), (5.7, 8.0)])
def test_sosfilt_rows_equals_sosfilt(band: tuple[float, float]) -> None:
    """The matrix form of ``sosfilt`` gives its numbers (float64 rounding) for any length,
    states, both directions; including lengths below, at and above one piece."""
    from scipy.signal import butter, sosfilt, sosfilt_zi

    from seismoflow.models.blockfilters import PIECE, sosfilt_rows

    sos = butter(4, band, btype="bandpass", fs=20.0, output="sos")
    rng = np.random.default_rng(2)
    for n in (1, 7, PIECE, PIECE + 1, 3 * PIECE - 5, 2654):
        x = rng.normal(0, 1, (5, n)).cumsum(axis=-1) + 1e4
        zi = sosfilt_zi(sos).reshape(1, -1) * x[:, :1] * rng.uniform(0, 2, (5, 1))
        for reverse in (False, True):
            src = x[:, ::-1] if reverse else x
            ref, _ = sosfilt(sos, src, axis=-1, zi=zi.reshape(5, -1, 2).transpose(1, 0, 2))
            got = sosfilt_rows(sos, x, zi, reverse=reverse)
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9 * np.abs(ref).max())
    assert sosfilt_rows(sos, np.zeros((0, 10)), np.zeros((0, 8))).shape == (0, 10)


def test_decimate_rows_equals_resample_poly() -> None:
    """The matrix form of the decimation gives ``resample_poly``'s numbers for every
    factor the store rates give and any length (shorter than one piece too)."""
    from scipy.signal import resample_poly

    from seismoflow.models.blockfilters import decimate_rows

    rng = np.random.default_rng(3)
    for q in (2, 4, 5, 10):
        h = win._antialias(q)
        for n in (1, 3, q * 16, q * 16 + 1, 13003):
            x = rng.normal(0, 1, (4, n)).cumsum(axis=-1)
            ref = resample_poly(x, 1, q, axis=-1, window=h)
            got = decimate_rows(x, h, q)
            assert got.shape == ref.shape
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * max(1.0, np.abs(ref).max()))


def test_config_round_trips_through_json() -> None:
    config = CNNConfig(components=("Z", "N", "E"), band=(0.5, 6.0), epochs=3)
    again = CNNConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    with pytest.raises(ValueError, match="unknown CNNConfig fields"):
        CNNConfig.from_dict({"epochs": 1, "magnitude_feature": True})


def test_class_weights_balance_present_classes() -> None:
    w = class_weights(np.array([0, 0, 0, 2, -1]), 4)
    assert w[1] == 0 and w[3] == 0
    assert w[0] * 3 == pytest.approx(w[2] * 1)


def test_pick_device_prefers_cuda_only_when_present() -> None:
    assert pick_device("cpu").type == "cpu"
    assert pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


# --- the real archive --------------------------------------------------------------------

TINY = CNNConfig(epochs=2, batch_size=16, widths=(8, 12), hidden=8, block_size=16, patience=5)


@pytest.fixture(scope="module")
def store(archive_store: tuple[Path, dict[str, Any]]) -> str:
    return str(archive_store[0])


@pytest.fixture(scope="module")
def examples(store: str) -> pd.DataFrame:
    ex = list_examples(store)
    assert len(ex) > 1000
    return ex


def subset(examples: pd.DataFrame, per_class: int, seed: int = 0) -> pd.DataFrame:
    """Whole events, ``per_class`` traces or a little more of each event class."""
    rng = np.random.default_rng(seed)
    keep: list[pd.DataFrame] = []
    for _label, rows in examples[examples["has_z"]].groupby("label", observed=True):
        events = rng.permutation(rows["event_id"].unique())
        taken = 0
        for e in events:
            if taken >= per_class:
                break
            part = rows[rows["event_id"] == e]
            keep.append(part)
            taken += len(part)
    return pd.concat(keep).sort_values(["group", "trace"]).reset_index(drop=True)


@pytest.mark.slow
@pytest.mark.data
def test_stream_yields_the_direct_read_in_chunk_order(
    store: str, examples: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = examples.sample(n=40, random_state=3)  # rows in random order
    prep = CNNConfig(components=("Z", "N", "E")).preprocess()
    ds = win.StoreWindows(
        store, rows["group"].tolist(), rows["trace"].tolist(), prep, None, block_size=8
    )
    blocks: list[int] = []
    read_block = win.StoreWindows.read_block

    def spy(self: win.StoreWindows, positions: np.ndarray) -> tuple[np.ndarray, ...]:
        blocks.append(len(positions))
        return read_block(self, positions)

    monkeypatch.setattr(win.StoreWindows, "read_block", spy)
    items = list(ds)
    assert max(blocks) <= 8 and sum(blocks) == 40  # read block by block, each once
    positions = [pos for _x, _m, _label, pos in items]
    traces = rows["trace"].to_numpy()[positions]
    assert traces.tolist() == sorted(traces.tolist())  # store (chunk) order
    direct_x, direct_mask = win.read_windows(store, "events", traces.tolist(), prep)
    for (x, mask, label, _pos), dx, dm in zip(items, direct_x, direct_mask, strict=True):
        assert label == -1
        np.testing.assert_allclose(x, dx, rtol=1e-5, atol=1e-6)
        assert mask.astype(bool).tolist() == dm.tolist()
    # The stored windows really differ from each other (not a constant read).
    assert not np.allclose(direct_x[0], direct_x[1])


@pytest.mark.slow
@pytest.mark.data
def test_inference_input_equals_the_reference_path(store: str, examples: pd.DataFrame) -> None:
    """Inference streaming (direct chunk reads, large blocks, batched preprocessing, no
    Python step per window) gives the model the input of the path it replaced (zarr reads
    of 32 traces, the reference preprocessing), and so the same probabilities."""
    rows = examples.sample(n=96, random_state=5)
    rows = rows[rows["has_z"]].reset_index(drop=True)
    config = CNNConfig.from_dict({**TINY.to_dict(), "components": ["Z", "N", "E"]})
    prep = config.preprocess()
    groups, traces = rows["group"].astype(str).tolist(), rows["trace"].astype(int).tolist()
    fast = win.StoreWindows(store, groups, traces, prep, None, block_size=256)
    got_x = np.zeros((len(rows), len(prep.channel_components), 260), dtype=np.float32)
    got_m = np.zeros((len(rows), len(prep.channel_components)), dtype=bool)
    for x, mask, positions in fast.iter_blocks():
        got_x[positions], got_m[positions] = x, mask
    for group in sorted(set(groups)):
        g = win.open_group(store, group)
        wave = g["waveform"]
        assert isinstance(wave, zarr_array())
        at = np.flatnonzero(rows["group"].astype(str).to_numpy() == group)
        idx = rows["trace"].to_numpy()[at]
        raw = np.asarray(wave.get_orthogonal_selection((idx, slice(None), slice(None))))
        ref_x, ref_m = win.preprocess_block_reference(
            raw, win.group_rate(g), prep, win.group_components(g)
        )
        np.testing.assert_allclose(got_x[at], ref_x, rtol=1e-5, atol=1e-5)
        assert got_m[at].tolist() == ref_m.tolist()
    torch.manual_seed(0)
    model = EventCNN(len(prep.channel_components), len(CLASSES), (8, 12), 5, 8).eval()
    probs = predict_cnn(model, store, rows, config, device="cpu")
    with torch.no_grad():
        ref = torch.softmax(
            model(torch.from_numpy(got_x), torch.from_numpy(got_m.astype(np.float32))), dim=1
        ).numpy()
    np.testing.assert_allclose(probs, ref, atol=1e-5)


def zarr_array() -> type:
    import zarr

    return zarr.Array


@pytest.mark.slow
@pytest.mark.data
def test_training_is_deterministic_for_a_seed(store: str, examples: pd.DataFrame) -> None:
    rows = subset(examples, 16)
    split = np.where(np.arange(len(rows)) % 4 == 0, "val", "train")
    config = CNNConfig.from_dict(
        {**TINY.to_dict(), "components": ["Z", "N", "E"], "component_dropout": 0.5}
    )
    runs = [train_cnn(store, rows, split, config, device="cpu") for _ in range(2)]
    a, b = (r.model.state_dict() for r in runs)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for key in ("train_loss", "val_loss", "val_macro_f1"):
        assert [h[key] for h in runs[0].history] == [h[key] for h in runs[1].history]
    other = train_cnn(store, rows, split, CNNConfig.from_dict({**config.to_dict(), "seed": 1}))
    assert not torch.equal(other.model.state_dict()["out.1.weight"], a["out.1.weight"])


@pytest.mark.slow
@pytest.mark.data
def test_save_load_round_trip_and_refusals(
    store: str, examples: pd.DataFrame, tmp_path: Path
) -> None:
    rows = subset(examples, 12)
    split = np.where(np.arange(len(rows)) % 3 == 0, "val", "train")
    run = train_cnn(store, rows, split, TINY, device="cpu")
    meta = save_cnn(run, tmp_path / "m")
    assert meta["classes"] == list(CLASSES) and meta["architecture"]["name"] == "EventCNN"
    assert json.loads((tmp_path / "m" / "cnn.json").read_text())["config"] == TINY.to_dict()
    model, config, classes = load_cnn(tmp_path / "m")
    assert config == TINY and classes == CLASSES
    p1, e1 = predict_cnn(run.model, store, rows, TINY, embeddings=True)
    p2 = predict_cnn(model, store, rows, config)
    assert isinstance(p2, np.ndarray)
    np.testing.assert_array_equal(p1, p2)
    assert p1.shape == (len(rows), 4) and e1.shape == (len(rows), 8)
    np.testing.assert_allclose(p1.sum(axis=1), 1.0, rtol=1e-5)

    # A weights file holding a pickled object is refused, not unpickled.
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "cnn.json").write_text((tmp_path / "m" / "cnn.json").read_text())
    state = {k: v for k, v in run.model.state_dict().items()}
    torch.save({**state, "extra": Trap()}, bad / "cnn.pt")
    with pytest.raises(ValueError, match="refusing"):
        load_cnn(bad)
    assert not Trap.unpickled
    with open(bad / "cnn.pt", "wb") as fh:
        pickle.dump(Trap(), fh)
    with pytest.raises(ValueError, match="refusing"):
        load_cnn(bad)
    assert not Trap.unpickled
    torch.save({**state, "note": "plain string"}, bad / "cnn.pt")  # loadable, but not tensors
    with pytest.raises(ValueError, match="refusing"):
        load_cnn(bad)


class Trap:
    """An object whose unpickling would run code: the loader must never get that far."""

    unpickled = False

    def __reduce__(self) -> tuple[Any, ...]:
        return (_sprung, ())


def _sprung() -> Trap:
    Trap.unpickled = True
    return Trap()


@pytest.mark.slow
@pytest.mark.data
def test_short_training_learns_on_real_windows(store: str, examples: pd.DataFrame) -> None:
    """Earthquakes against surface events on whole held-out events: clearly above chance.

    The held-out events are a test split, not a validation split, so all ten epochs run and
    the model returned is the last one: how well it fits its training windows does not hang
    on which early epoch a small validation split happened to pick."""
    rows = subset(examples[examples["label"].isin(["earthquake", "surface_event"])], 300)
    split = event_split(rows, (0.7, 0.001, 0.3), seed=0, by_site=False)
    assert set(split) == {"train", "test"}
    config = CNNConfig(
        epochs=10, batch_size=16, lr=3e-3, dropout=0.3, widths=(12, 16, 24), hidden=16, patience=10
    )
    run = train_cnn(store, rows, split, config, device="cpu")
    losses = [h["train_loss"] for h in run.history]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert len(run.history) == 10 and run.best_epoch == 9  # no validation: the last epoch
    probs = predict_cnn(run.model, store, rows, config)
    assert isinstance(probs, np.ndarray)
    truth = rows["label"].astype(str).to_numpy() == "surface_event"
    # How often a surface-event window outranks an earthquake window (ROC AUC; chance 0.5).
    score = probs[:, CLASSES.index("surface_event")] - probs[:, CLASSES.index("earthquake")]

    def auc(part: np.ndarray) -> float:
        pos, neg = score[part & truth], score[part & ~truth]
        assert len(pos) > 20 and len(neg) > 20
        return float(np.mean(pos[:, None] > neg[None, :]))

    # Windows and labels stay aligned through streaming and shuffling: the model fits its
    # training windows, and ranks windows of unseen events above chance.
    train_auc, test_auc = auc(split == "train"), auc(split == "test")
    assert train_auc > 0.8, train_auc  # measured: 0.89 (split seeds 1, 2: 0.91, 0.83)
    assert test_auc > 0.6, test_auc  # measured: 0.70 (0.82, 0.73)

    # With a validation split, the model kept is the epoch with the best validation score.
    split = event_split(rows, (0.7, 0.3, 0.001), seed=0, by_site=False)
    split = np.where(split == "test", "train", split)
    run = train_cnn(store, rows, split, CNNConfig.from_dict({**TINY.to_dict(), "epochs": 3}))
    scores = [h["val_macro_f1"] for h in run.history]
    assert len(scores) == 3 and scores[run.best_epoch] == max(scores)
    assert run.best_epoch == scores.index(max(scores))


@pytest.mark.slow
@pytest.mark.data
def test_site_cv_runs_end_to_end(store: str, examples: pd.DataFrame) -> None:
    rows = subset(examples, 12)
    folds = site_folds(rows, 3, 0)
    result = cnn_site_cv(store, rows, folds, CNNConfig.from_dict({**TINY.to_dict(), "epochs": 1}))
    assert result["n_folds"] == 3 and len(result["folds"]) == 3
    assert result["n_scored"] == int(rows["has_z"].sum())
    assert 0.0 <= result["event_macro_f1"] <= 1.0
    assert result["noise_recall"] is None or 0.0 <= result["noise_recall"] <= 1.0
    assert sum(f["n_test"] for f in result["folds"]) == result["n_scored"]


def test_noise_mixing_adds_power_in_log_envelopes() -> None:
    """Noise mixed at a level far below the event leaves its envelope; far above, the window
    becomes the noise's (both median-free); noise windows and masked channels are untouched."""
    from seismoflow.models.windows import Preprocess, StoreWindows

    rng = np.random.default_rng(0)
    prep = Preprocess(20.0, (1.0, 8.0), ("Z",), envelope_bands=((1.0, 2.0), (2.0, 4.0)))
    signal = rng.normal(0, 1, (3, 2, 50)).astype(np.float32)
    signal -= np.median(signal, axis=-1, keepdims=True)
    signal[1, 1] = 0.0  # a masked channel
    bank = rng.normal(0, 0.2, (5, 2, 50)).astype(np.float32)
    labels = np.array([0, 1, 3])  # earthquake, explosion, noise (label 3)

    def mixed(level: float) -> np.ndarray:
        ds = StoreWindows("unused", ["events"], [0], prep, noise_bank=bank, noise_mix=1.0,
                          noise_level=(level, level), noise_label=3)  # fmt: skip
        return ds.mix_noise(signal, labels, np.random.default_rng(1))

    quiet, loud = mixed(-6.0), mixed(6.0)
    np.testing.assert_allclose(quiet[0], signal[0], atol=1e-3)
    np.testing.assert_array_equal(quiet[2], signal[2])  # a noise window gets no more noise
    assert (loud[1, 1] == 0).all()  # masked stays masked
    np.testing.assert_allclose(np.median(loud[0], axis=-1), 0.0, atol=1e-5)
    # far above the event, the window is one of the bank's noise windows (less its median)
    candidates = bank - np.median(bank, axis=-1, keepdims=True)
    assert min(np.abs(loud[0] - c).max() for c in candidates) < 1e-3
