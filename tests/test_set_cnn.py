"""Set pooling over an event's traces (``seismoflow.models.set_cnn``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from seismoflow.examples import list_examples, site_folds
from seismoflow.models.cnn import CNNConfig, EventCNN, cnn_out_of_fold, train_cnn
from seismoflow.models.set_cnn import (
    SET_POOLINGS,
    EventSetCNN,
    EventSets,
    TracePooling,
    augment,
    batch_sets,
    pad_sets,
    predict_sets,
    train_set_cnn,
)
from tests.test_cnn import one_thread  # noqa: F401 - autouse: one torch thread here too

# --- numerics on synthetic tensors --------------------------------------------------------


def test_pad_sets_places_each_trace_in_its_event() -> None:
    e = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    event = torch.tensor([2, 0, 2, 2, 0, 1])
    h, present = pad_sets(e, event, 4)
    assert h.shape == (4, 3, 2) and present.shape == (4, 3)
    assert present.sum(dim=1).tolist() == [2, 1, 3, 0]
    torch.testing.assert_close(h[0, :2], e[[1, 4]])
    torch.testing.assert_close(h[2], e[[0, 2, 3]])
    assert (h[~present] == 0).all()


@pytest.mark.parametrize("kind", SET_POOLINGS)
def test_pooling_ignores_trace_order_and_padded_slots(kind: str) -> None:
    torch.manual_seed(0)
    pool = TracePooling(kind, 5).eval()
    h = torch.randn(3, 4, 5)
    present = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        out = pool(h, present)
        perm = torch.tensor([2, 0, 3, 1])
        h_perm, p_perm = h[:, perm], present[:, perm]
        torch.testing.assert_close(pool(h_perm, p_perm), out)
        # Whatever sits in a padded slot never reaches the output.
        h_junk = torch.where(present[..., None], h, torch.full_like(h, 1e6))
        torch.testing.assert_close(pool(h_junk, present), out)
        # An event of one trace pools to a function of that trace alone.
        alone = pool(h[2:3, :1], present[2:3, :1])
    assert out.shape == (3, pool.out_features)
    torch.testing.assert_close(alone, out[2:3])
    if kind == "mean":
        torch.testing.assert_close(out[1], h[1, :2].mean(dim=0))
    if kind == "max":
        torch.testing.assert_close(out[1], h[1, :2].amax(dim=0))


def test_pooling_of_an_event_without_traces_is_zero_not_nan() -> None:
    for kind in SET_POOLINGS:
        out = TracePooling(kind, 3)(torch.randn(2, 2, 3), torch.zeros(2, 2, dtype=torch.bool))
        assert torch.isfinite(out).all() and (out == 0).all()


def test_unknown_pooling_is_refused() -> None:
    with pytest.raises(ValueError, match="set pooling"):
        TracePooling("median", 4)


def _set_model(kind: str = "attention") -> EventSetCNN:
    torch.manual_seed(0)
    encoder = EventCNN(in_channels=2, n_classes=4, widths=(4, 6), kernel=3, hidden=5)
    return EventSetCNN(encoder, kind, 4, dropout=0.0).eval()


def test_set_model_gives_one_prediction_per_event_whatever_the_trace_order() -> None:
    model = _set_model()
    x = torch.randn(7, 2, 40)
    mask = torch.ones(7, 2)
    mask[3, 1] = 0
    event = torch.tensor([0, 1, 1, 2, 1, 0, 2])
    with torch.no_grad():
        logits = model(x, mask, event, 3)
        perm = torch.tensor([6, 4, 0, 2, 5, 3, 1])
        logits_perm = model(x[perm], mask[perm], event[perm], 3)
        # Each event alone gives what it gives in a batch of events (eval mode).
        alone = model(x[event == 1], mask[event == 1], torch.zeros(3, dtype=torch.long), 1)
    assert logits.shape == (3, 4)
    torch.testing.assert_close(logits_perm, logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone, logits[1:2], atol=1e-5, rtol=1e-5)


def test_event_sets_group_rows_and_batches_cap_traces() -> None:
    events = np.array(["b", "a", "b", "noise:1", "b", "a", "c"])
    labels = np.array([0, 2, 0, 3, 0, 2, 1])
    rows = np.array([0, 1, 2, 3, 4, 5])  # "c" is not among the rows
    sets = EventSets.of(events, labels, rows)
    assert sets.event_ids.tolist() == ["a", "b", "noise:1"]
    assert [m.tolist() for m in sets.members] == [[1, 5], [0, 2, 4], [3]]
    assert sets.labels.tolist() == [2, 0, 3]
    x = np.arange(7, dtype=np.float32)[:, None, None] * np.ones((1, 2, 4), np.float32)
    mask = np.ones((7, 2), dtype=bool)
    bx, bm, bi = batch_sets(sets, np.array([1, 0]), x, mask)
    assert bi.tolist() == [0, 0, 0, 1, 1] and bx[:, 0, 0].tolist() == [0, 2, 4, 1, 5]
    bx, _, bi = batch_sets(sets, np.array([1, 2]), x, mask, 2, np.random.default_rng(0))
    assert bi.tolist() == [0, 0, 1] and set(bx[:2, 0, 0].tolist()) <= {0.0, 2.0, 4.0}


def test_augment_crops_and_keeps_missing_input_zero() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 12, 30)).astype(np.float32)
    x[1, 6:] = 0.0  # a missing component's six bands
    out = augment(x, 6, 0.2, 20, rng)
    assert out.shape == (5, 12, 20)
    assert (out[1, 6:] == 0).all()


def test_short_training_separates_two_synthetic_classes() -> None:
    rng = np.random.default_rng(0)
    n_events, per_event = 24, 3
    x = rng.normal(0.0, 0.3, (n_events * per_event, 1, 40)).astype(np.float32)
    event_of_row = np.repeat(np.arange(n_events), per_event)
    labels = (np.arange(n_events) % 2)[event_of_row]
    x[labels == 1, :, 15:25] += 2.0  # class 1: a burst mid-window
    mask = np.ones((len(x), 1), dtype=bool)
    ids = np.array([f"e{e}" for e in event_of_row])
    sets = EventSets.of(ids, labels, np.arange(len(x)))
    config = CNNConfig(
        epochs=15, widths=(4, 6), kernel=3, hidden=6, dropout=0.0, lr=1e-2, tilt=0.0,
        crop_s=0.0, envelope_bands=(), set_pooling="mean", set_events_per_batch=6,
        set_trace_loss=0.5,
    )  # fmt: skip
    model, history, _ = train_set_cnn(x, mask, sets, None, config, 2, torch.device("cpu"))
    probs = predict_sets(model, sets, x, mask, torch.device("cpu"))
    assert len(history) == 15 and probs.shape == (n_events, 2)
    assert (probs.argmax(axis=1) == sets.labels).mean() >= 0.9


def test_the_per_trace_trainer_refuses_a_set_config() -> None:
    with pytest.raises(ValueError, match="set_pooling"):
        train_cnn("unused", pd.DataFrame(), np.array([]), CNNConfig(set_pooling="mean"))


# --- on the archive ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.data
def test_set_out_of_fold_gives_every_trace_its_event_probability(
    archive_store: tuple[Path, dict[str, Any]],
) -> None:
    store = str(archive_store[0])
    ex = list_examples(store)
    ex = ex[ex["has_z"]]
    keep = ex.groupby("label", observed=True)["event_id"].unique().apply(lambda e: list(e[:4]))
    rows = ex[ex["event_id"].isin([e for ids in keep for e in ids])].reset_index(drop=True)
    folds = site_folds(rows, 3, 0)
    config = CNNConfig(epochs=1, widths=(8, 12), hidden=8, set_pooling="attention")
    probs, per_fold = cnn_out_of_fold(store, rows, folds, config)
    assert len(per_fold) == 3 and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    per_event = pd.DataFrame(probs).groupby(rows["event_id"].to_numpy()).std().fillna(0.0)
    assert (per_event.to_numpy() < 1e-6).all()
