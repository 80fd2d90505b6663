"""Model selection numerics: site-grouped folds, bootstrap intervals, ECE, temperature."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from seismoflow.examples import site_folds
from seismoflow.models import selection as sel


def _examples(n_sites: int = 12, per_site: int = 6, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_sites):
        label = ("earthquake", "explosion", "surface_event")[s % 3]
        for e in range(per_site):
            rows.append({"site": f"site{s}", "event_id": f"e{s}-{e // 2}", "label": label})
    df = pd.DataFrame(rows)
    return df.sample(frac=1.0, random_state=int(rng.integers(1000))).reset_index(drop=True)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_site_folds_never_put_a_site_on_both_sides(seed: int) -> None:
    examples = _examples(seed=seed)
    folds = site_folds(examples, 5, seed)
    assert sel.sites_disjoint(examples["site"].to_numpy(), folds)
    for k in range(5):
        test_sites = set(examples["site"][folds == k])
        train_sites = set(examples["site"][folds != k])
        assert not test_sites & train_sites
    assert not sel.sites_disjoint(np.array(["a", "a", "b"]), np.array([0, 1, 1]))


def test_f1_scores_by_hand() -> None:
    truth = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 3])  # class 3 (noise) called once, never true
    f1 = sel.f1_scores(truth, pred, 4, [0, 1, 2])
    np.testing.assert_allclose(f1, [2 / 3, 0.8, 2 / 3])


def test_bootstrap_interval_holds_the_mean_and_narrows_with_events() -> None:
    rng = np.random.default_rng(0)

    def draw(n: int) -> dict[str, object]:
        truth = rng.integers(0, 3, n)
        pred = np.where(rng.random((3, n)) < 0.7, truth, rng.integers(0, 3, (3, n)))
        return sel.bootstrap_f1(truth, pred, 4, [0, 1, 2], n_boot=300, seed=1)

    small, large = draw(60), draw(2000)
    for out in (small, large):
        m = out["macro_f1"]
        assert m["low"] <= m["mean"] <= m["high"]
        assert set(out["per_class_f1"]) == {0, 1, 2}
        assert len(out["per_seed_macro_f1"]) == 3
    width = lambda o: o["macro_f1"]["high"] - o["macro_f1"]["low"]  # noqa: E731
    assert width(large) < width(small) / 3
    # perfect predictions: a degenerate interval at 1
    truth = np.arange(30) % 3
    perfect = sel.bootstrap_f1(truth, truth[None, :], 4, [0, 1, 2], n_boot=50)
    assert perfect["macro_f1"] == {"mean": 1.0, "low": 1.0, "high": 1.0}


def test_ece_by_hand_and_temperature_fixes_overconfidence() -> None:
    # two bins: confidence 0.9 with accuracy 0.5, confidence 0.6 with accuracy 1
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    truth = np.array([0, 1, 0, 0])
    assert sel.expected_calibration_error(probs, truth) == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)
    bins = sel.reliability(probs, truth)
    assert [b["n"] for b in bins] == [2, 2] and bins[1]["accuracy"] == 0.5
    # an overconfident model: right 70% of the time at confidence ~0.97
    rng = np.random.default_rng(0)
    n = 3000
    truth = rng.integers(0, 3, n)
    pred = np.where(rng.random(n) < 0.7, truth, (truth + 1) % 3)
    logits = np.full((n, 3), 0.0)
    logits[np.arange(n), pred] = 4.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    t = sel.fit_temperature(probs, truth)
    assert t > 1.5
    calibrated = sel.apply_temperature(probs, t)
    assert (calibrated.argmax(axis=1) == probs.argmax(axis=1)).all()
    assert sel.expected_calibration_error(calibrated, truth) < 0.03
    assert sel.expected_calibration_error(probs, truth) > 0.2
    folds = np.arange(n) % 5
    cross, temps = sel.cross_fitted_temperature(probs, truth, folds)
    assert set(temps) == set(range(5))
    assert sel.expected_calibration_error(cross, truth) < 0.03


def test_score_candidates_and_choose() -> None:
    classes = ("earthquake", "explosion", "surface_event", "noise")
    rng = np.random.default_rng(3)
    n_events, per = 60, 3
    ids = np.repeat([f"e{i}" for i in range(n_events)], per)
    labels = np.repeat(np.array(classes[:3])[np.arange(n_events) % 3], per)
    ids = np.concatenate([ids, ["noise:a", "noise:b"]])
    labels = np.concatenate([labels, ["noise", "noise"]])
    truth = np.array([classes.index(c) for c in labels])
    good = np.eye(4)[truth] * 0.6 + 0.1
    bad = rng.dirichlet(np.ones(4), len(ids))
    folds = [np.arange(len(ids)) % 4, (np.arange(len(ids)) + 1) % 4]
    scores = sel.score_candidates(
        {"good": [good, good], "bad": [bad, bad]}, labels, ids, folds, classes, classes[:3],
        n_boot=50,
    )  # fmt: skip
    assert sel.choose(scores) == "good"
    assert scores["good"]["macro_f1"]["mean"] == 1.0
    assert scores["good"]["n_events"] == n_events  # noise windows are not scored
    assert np.asarray(scores["good"]["event_confusion"]).sum() == 2 * n_events
    assert set(scores["good"]["per_class_f1"]) == set(classes[:3])
    assert 0 <= scores["good"]["ece_calibrated"] <= scores["good"]["ece"]


def test_scores_per_pooling_and_choose_pooling() -> None:
    # Each event has one confident, right trace and two undecided ones leaning wrong: the
    # mean of the traces' probabilities follows the undecided majority, the geometric mean
    # the confident station; the choice takes the better pooling and its best candidate.
    classes = ("earthquake", "explosion", "surface_event", "noise")
    n_events = 30
    ids = np.repeat([f"e{i}" for i in range(n_events)], 3)
    truth_ev = np.arange(n_events) % 3
    labels = np.array(classes)[np.repeat(truth_ev, 3)]
    probs = np.zeros((len(ids), 4))
    for i, t in enumerate(truth_ev):
        wrong = (t + 1) % 3
        probs[3 * i] = 0.025
        probs[3 * i, t], probs[3 * i, wrong] = 0.9, 0.05
        for j in (1, 2):
            probs[3 * i + j] = 0.05
            probs[3 * i + j, t], probs[3 * i + j, wrong] = 0.2, 0.7
    folds = [np.arange(len(ids)) // 3 % 3]
    oof = {"logistic": [probs], "flat": [np.full_like(probs, 0.25)]}
    by = {
        p: sel.score_candidates(oof, labels, ids, folds, classes, classes[:3], 20, 0, p)
        for p in ("mean", "geometric")
    }
    assert by["mean"]["logistic"]["macro_f1"]["mean"] == 0.0
    assert by["geometric"]["logistic"]["macro_f1"]["mean"] == 1.0
    assert sel.choose_pooling(by, ("mean", "geometric")) == ("geometric", "logistic")
    # ties go to the earlier pooling
    tie = {"mean": by["geometric"], "geometric": by["geometric"]}
    assert sel.choose_pooling(tie, ("mean", "geometric"))[0] == "mean"
    with pytest.raises(ValueError):
        sel.choose_pooling(by, ("median",))
