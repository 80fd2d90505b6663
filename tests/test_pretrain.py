"""Unlabelled windows of the store and contrastive pretraining of the CNN trunk
(``seismoflow.models.unlabelled``, ``seismoflow.models.pretrain``)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from seismoflow.storage.tables import read_table

from seismoflow.examples import list_examples
from seismoflow.models import pretrain as pre
from seismoflow.models.cnn import CNNConfig, build_model, cnn_out_of_fold, train_cnn
from seismoflow.models.set_cnn import preprocess_rows
from seismoflow.models.unlabelled import (
    UnlabelledWindow,
    allowed_starts,
    cut_unlabelled,
    labelled_spans,
    plan_unlabelled,
    preprocess_verticals,
    unlabelled_inputs,
    window_layout,
)
from seismoflow.models.windows import open_group
from tests.conftest import link_day_files
from tests.test_cnn import one_thread  # noqa: F401 - autouse: one torch thread here too

S = 1_000_000_000  # ns per second
TINY = CNNConfig(epochs=1, batch_size=16, widths=(8, 12), hidden=8, block_size=16)

# --- numerics on synthetic tables and tensors -----------------------------------------------


def test_allowed_starts_keep_the_margin_from_every_origin() -> None:
    origins = np.array([1000 * S, 5000 * S])
    out = allowed_starts((0, 10_000 * S), origins, 100 * S, 600 * S, 10 * S)
    assert out == [(10 * S, 300 * S - 1), (1600 * S + 1, 4300 * S - 1), (5600 * S + 1, 9890 * S)]
    for lo, hi in out:
        for start in (lo, hi):
            end = start + 100 * S
            assert np.all((origins < start - 600 * S) | (origins > end + 600 * S))
    assert allowed_starts((0, 50 * S), origins, 100 * S, 600 * S, 10 * S) == []


def _days(rows: list[tuple[str, int, int]]) -> pd.DataFrame:
    """Channel-day rows of ``(channel, first_ns, npts at 100 Hz)``, one segment each."""
    return pd.DataFrame(
        {
            "channel": [c for c, _, _ in rows],
            "n_samples": [n for _, _, n in rows],
            "sampling_rate": 100.0,
            "segments": [json.dumps([{"start_ns": a, "npts": n}]) for _, a, n in rows],
        }
    )


def test_plan_keeps_verticals_away_from_origins_and_labelled_windows() -> None:
    hour = 3600 * 100
    days = _days([("XX.A..HHZ", 0, 6 * hour), ("XX.A..HHN", 0, 6 * hour), ("XX.B..HHZ", 0, hour)])
    origins = np.array([3 * 3600 * S])
    labelled = {"XX.A": np.array([[1000 * S, 1130 * S]]), "XX.B": np.array([[0, 3600 * S]])}
    length = 130 * S
    plan = plan_unlabelled(days, origins, labelled, length, 40, margin_s=600, seed=1)
    assert len(plan) == 40
    assert plan == plan_unlabelled(days, origins, labelled, length, 40, margin_s=600, seed=1)
    assert {w.channel for w in plan} == {"XX.A..HHZ"}  # B is labelled throughout, N no vertical
    starts = np.array(sorted(w.start_ns for w in plan))
    assert np.all((starts + length < origins[0] - 600 * S) | (starts > origins[0] + 600 * S))
    assert np.all((starts + length < 1000 * S) | (starts > 1130 * S))
    assert np.all(np.diff(starts) >= length // 2)  # at most half a window shared
    assert starts.min() >= 10 * S and starts.max() + length <= 6 * 3600 * S - 10 * S


def test_nt_xent_is_low_for_matching_views_and_log_n_for_blind_ones() -> None:
    torch.manual_seed(0)
    z = torch.randn(16, 8)
    assert float(pre.nt_xent(z, z, 0.05)) < 0.05
    blind = pre.nt_xent(torch.ones(16, 8), torch.ones(16, 8), 0.1)
    assert math.isclose(float(blind), math.log(31), rel_tol=1e-5)
    a, b = torch.randn(16, 8), torch.randn(16, 8)
    assert math.isclose(float(pre.nt_xent(a, b, 0.1)), float(pre.nt_xent(b, a, 0.1)), rel_tol=1e-5)
    assert pre.partner_hits(z, z) == 32


def test_load_trunk_copies_all_but_the_class_layer_and_refuses_misfits() -> None:
    config = CNNConfig(widths=(8, 12), hidden=8)
    torch.manual_seed(1)
    source = build_model(config, 4)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("out.")}
    torch.manual_seed(2)
    target = build_model(config, 4)
    fresh_out = target.out[1].weight.detach().clone()
    pre.load_trunk(target, state)
    for k, v in state.items():
        torch.testing.assert_close(target.state_dict()[k], v)
    torch.testing.assert_close(target.out[1].weight, fresh_out)
    with pytest.raises(ValueError, match="does not fit"):
        pre.load_trunk(target, {k: v for k, v in state.items() if "stem" not in k})
    wider = build_model(CNNConfig(widths=(8, 16), hidden=8), 4)
    with pytest.raises(ValueError, match="shape"):
        pre.load_trunk(wider, state)


def _synthetic_windows(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Log-envelope-like windows with distinct shapes (a bump at a random time and band)."""
    rng = np.random.default_rng(seed)
    t = np.arange(260)[None, None]
    centre = rng.uniform(40, 220, (n, 1, 1))
    band = rng.uniform(0, 5, (n, 1, 1))
    weight = np.exp(-0.5 * (np.arange(6)[None, :, None] - band) ** 2)
    x = weight * np.exp(-0.5 * ((t - centre) / 15) ** 2) + 0.05 * rng.normal(size=(n, 6, 260))
    return x.astype(np.float32), np.ones((n, 6), dtype=bool)


def test_pretraining_learns_to_find_partner_views_deterministically() -> None:
    x, mask = _synthetic_windows(96)
    config = CNNConfig(widths=(8, 12), hidden=8, pretrain_epochs=12, pretrain_batch=32)
    run = pre.pretrain_encoder(x, mask, config, 4, torch.device("cpu"))
    assert run.n_windows == 96 and len(run.history) == 12
    assert not any(k.startswith("out.") for k in run.state)
    assert run.history[-1]["loss"] < run.history[0]["loss"] - 0.3
    assert run.history[-1]["partner_accuracy"] > 2 * run.history[0]["partner_accuracy"]
    again = pre.pretrain_encoder(x, mask, config, 4, torch.device("cpu"))
    for k, v in run.state.items():
        torch.testing.assert_close(again.state[k], v)


def test_pretraining_is_off_by_default_and_round_trips() -> None:
    assert CNNConfig().pretrain_epochs == 0
    config = CNNConfig(pretrain_epochs=5, pretrain_windows=10)
    assert CNNConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


# --- real data: a store of one continuous day (O2.WILZ) and one day of event recordings ------


@pytest.fixture(scope="module")
def store(archive: Path, prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    from seismoflow import api

    sds = link_day_files(
        archive, ("O2.WILZ..EH?.D.2024.034", "*.D.2020.103"), tmp_path_factory.mktemp("pre") / "s"
    )
    location = str(tmp_path_factory.mktemp("pre-store") / "store.zarr")
    api.ingest(
        sds, location, stations=archive / "stations.xml.gz", events=archive / "events.xml",
        workers=1,
    )  # fmt: skip
    return location


@pytest.mark.data
def test_unlabelled_windows_avoid_origins_and_labelled_windows(store: str) -> None:
    x, mask, windows = unlabelled_inputs(store, TINY.preprocess(), 30, margin_s=600, seed=0)
    assert len(windows) >= 20 and x.shape[0] == len(windows) == mask.shape[0]
    assert mask.all() and np.isfinite(x).all() and (x != 0).any(axis=(1, 2)).all()
    events = list_examples(store)
    ex = preprocess_rows(store, events[events["has_z"]].iloc[:4], TINY)[0]
    assert x.shape[1:] == ex.shape[1:]  # the CNN's input shape
    layout = window_layout(store)
    length = round(layout.n_samples * S / layout.sampling_rate)
    origins = read_table(store, "catalog")["origin_time_ns"].to_numpy(dtype=np.int64)
    spans = labelled_spans(store)
    assert sum(len(v) for v in spans.values()) == open_group(store, "events")["trace_key"].shape[0]
    for w in windows:
        assert w.channel.endswith("Z")
        assert np.all((origins < w.start_ns - 600 * S) | (origins > w.start_ns + length + 600 * S))
        s = spans.get(w.station)
        assert s is None or not np.any((s[:, 0] <= w.start_ns + length) & (s[:, 1] >= w.start_ns))


@pytest.mark.data
def test_a_window_cut_from_continuous_data_equals_the_stored_event_window(store: str) -> None:
    """The cut and the preprocessing are the CNN's: cutting an event window's own time from
    the continuous data gives the stored window, and the same model input."""
    events = list_examples(store)
    row = events[events["has_z"]].iloc[0]
    group = open_group(store, "events")
    trace = int(row["trace"])
    z_code = str(np.asarray(group["channels"][trace])).split(",")[0]
    start = int(np.asarray(group["window_start"][trace]).astype("datetime64[ns]").astype(np.int64))
    channel = f"{row['network']}.{row['station']}.{row['location']}.{z_code}"
    layout = window_layout(store)
    z, kept = cut_unlabelled(store, [UnlabelledWindow(channel, start)], layout)
    assert kept == [UnlabelledWindow(channel, start)]
    stored = np.asarray(group["waveform"][trace, 0])
    np.testing.assert_allclose(z[0], stored, rtol=1e-6, atol=1e-3)
    x, mask = preprocess_verticals(z, layout.sampling_rate, TINY.preprocess())
    x_ref, mask_ref = preprocess_rows(store, events.loc[[row.name]], TINY)
    np.testing.assert_allclose(x, x_ref, atol=1e-4)
    assert mask.tolist() == mask_ref.tolist()


@pytest.mark.data
def test_train_cnn_starts_from_a_pretrained_trunk(store: str) -> None:
    events = list_examples(store)
    events = events[events["has_z"]].reset_index(drop=True)
    x, mask = preprocess_rows(store, events, TINY)
    run = pre.pretrain_encoder(x, mask, replace(TINY, pretrain_epochs=1), 4, torch.device("cpu"))
    split = np.full(len(events), "train")
    trained = train_cnn(
        store, events, split, replace(TINY, epochs=0),
        encoder_state=run.state,
    )  # fmt: skip
    for k, v in run.state.items():
        torch.testing.assert_close(trained.model.state_dict()[k], v)


@pytest.mark.data
@pytest.mark.parametrize("set_pooling", ["", "mean"])
def test_cv_pretrains_each_fold_without_its_test_windows(
    store: str, monkeypatch: pytest.MonkeyPatch, set_pooling: str
) -> None:
    """Per-trace and set CNN: each fold pretrains on the shared pool and exactly its own
    training rows, never a validation (next fold) or test window."""
    events = list_examples(store)
    events = events[events["has_z"]].reset_index(drop=True)
    folds = np.arange(len(events)) % 3
    config = replace(TINY, pretrain_epochs=1, pretrain_windows=20, set_pooling=set_pooling)
    x_all = preprocess_rows(store, events, config)[0]
    seen: list[tuple[int, np.ndarray]] = []
    real = pre.pretrain_on

    def spy(pool: Any, training: Any, *args: Any) -> pre.PretrainRun:
        seen.append((len(pool[0]), training[0].copy()))
        return real(pool, training, *args)

    monkeypatch.setattr(pre, "pretrain_on", spy)
    probs, details = cnn_out_of_fold(store, events, folds, config)
    assert len(seen) == 3 and all(d["pretrain"]["n_windows"] > 0 for d in details)
    for k, (n_pool, training) in enumerate(seen):
        assert n_pool >= 10  # the shared unlabelled windows
        train_rows = np.flatnonzero((folds != k) & (folds != (k + 1) % 3))
        assert len(training) == len(train_rows)
        np.testing.assert_array_equal(training, x_all[train_rows])
    assert np.isfinite(probs).all()
