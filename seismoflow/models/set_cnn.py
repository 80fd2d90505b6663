"""Set pooling: one CNN prediction per event from all of its vertical traces at once.

The per-trace CNN (:class:`seismoflow.models.cnn.EventCNN`) classifies each trace alone and
an event's probability is then a mean over its traces. Here the same network's trunk is a
shared per-trace encoder (its ``embed``: ``(traces, hidden)``); the embeddings of an event's
traces are pooled over the set (mean, max, mean and max, or gated attention, Ilse et al.
2018), masked where an event has fewer traces than the largest in the batch, and one
classifier head gives the event's logits. Training is per event: class-balanced over
events, each epoch draws up to ``CNNConfig.set_max_traces`` of an event's traces (station
dropout), with the per-trace CNN's crops and spectral tilts; with ``set_trace_loss`` > 0
the encoder's own per-trace head is trained on each trace's event class too (that weight
times its cross entropy is added), so the encoder sees a label per trace, not only per
event. Noise windows are events of one trace.

Every window is preprocessed once into memory (6 KB a window for the default envelopes),
so a cross-validation reads the store once, not once per fold and epoch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from seismoflow.labels import CLASSES
from seismoflow.models.windows import tilt_jitter

if TYPE_CHECKING:  # cnn.py imports this module lazily: no import cycle at run time
    from seismoflow.models.cnn import CNNConfig

log = logging.getLogger(__name__)

SET_POOLINGS: tuple[str, ...] = ("mean", "max", "meanmax", "attention")


def pad_sets(
    embeddings: torch.Tensor, event_index: torch.Tensor, n_events: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Trace embeddings ``(traces, hidden)`` with each trace's event ``(traces,)`` in
    ``[0, n_events)`` -> padded sets ``(n_events, max_traces, hidden)`` (zeros where padded)
    and ``present`` ``(n_events, max_traces)`` (True for a real trace)."""
    n, hidden = embeddings.shape
    counts = torch.bincount(event_index, minlength=n_events)
    width = int(counts.max()) if n else 0
    order = torch.argsort(event_index, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(event_index)
    slot[order] = torch.arange(n, device=event_index.device) - starts[event_index[order]]
    padded = embeddings.new_zeros((n_events, width, hidden))
    padded[event_index, slot] = embeddings
    present = torch.zeros((n_events, width), dtype=torch.bool, device=embeddings.device)
    present[event_index, slot] = True
    return padded, present


class TracePooling(nn.Module):
    """``(events, traces, hidden)`` + ``present`` ``(events, traces)`` -> ``(events, out)``;
    invariant to the order of an event's traces, blind to padded slots. ``out`` is
    ``hidden`` (``2 * hidden`` for ``meanmax``). An event with no trace pools to zeros."""

    def __init__(self, kind: str, hidden: int) -> None:
        super().__init__()
        if kind not in SET_POOLINGS:
            raise ValueError(f"set pooling {kind!r} is not one of {SET_POOLINGS}")
        self.kind = kind
        self.out_features = 2 * hidden if kind == "meanmax" else hidden
        if kind == "attention":
            self.value = nn.Linear(hidden, hidden)
            self.gate = nn.Linear(hidden, hidden)
            self.score = nn.Linear(hidden, 1)

    def forward(self, h: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        m = present.to(h.dtype)[..., None]
        count = m.sum(dim=1).clamp(min=1.0)
        mean = (h * m).sum(dim=1) / count
        if self.kind == "mean":
            return mean
        neg = torch.finfo(h.dtype).min
        peak = torch.where(present[..., None], h, torch.full_like(h, neg)).amax(dim=1)
        peak = torch.where(present.any(dim=1, keepdim=True), peak, torch.zeros_like(peak))
        if self.kind == "max":
            return peak
        if self.kind == "meanmax":
            return torch.cat([mean, peak], dim=1)
        score = self.score(torch.tanh(self.value(h)) * torch.sigmoid(self.gate(h))).squeeze(-1)
        score = score.masked_fill(~present, neg)
        weight = torch.softmax(score, dim=1) * present.to(h.dtype)
        return (weight[..., None] * h).sum(dim=1)


class EventSetCNN(nn.Module):
    """A per-trace encoder (an ``EventCNN``'s ``embed``), set pooling over each event's
    traces, dropout and a linear head: ``(x, mask, event_index, n_events)`` -> event logits
    ``(n_events, n_classes)``; ``x`` ``(traces, channels, samples)``, ``mask``
    ``(traces, channels)``, ``event_index`` ``(traces,)``."""

    def __init__(self, encoder: nn.Module, pooling: str, n_classes: int, dropout: float) -> None:
        super().__init__()
        hidden = int(encoder.arch["hidden"])  # type: ignore[index]
        self.encoder = encoder
        self.pool = TracePooling(pooling, hidden)
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.pool.out_features, n_classes))
        self.arch = {
            "name": "EventSetCNN",
            "pooling": pooling,
            "encoder": dict(encoder.arch),  # type: ignore[arg-type]
        }

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, event_index: torch.Tensor, n_events: int
    ) -> torch.Tensor:
        return self.logits(x, mask, event_index, n_events)[0]

    def logits(
        self, x: torch.Tensor, mask: torch.Tensor, event_index: torch.Tensor, n_events: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Event logits ``(n_events, n_classes)`` and the encoder's own per-trace logits
        ``(traces, n_classes)`` (its ``out`` layer: the auxiliary trace loss)."""
        e = self.encoder.embed(x, mask)  # type: ignore[operator]
        h, present = pad_sets(e, event_index, n_events)
        return self.out(self.pool(h, present)), self.encoder.out(e)  # type: ignore[operator]


@dataclass(frozen=True)
class EventSets:
    """Rows grouped by event: ``members[i]`` are the row positions of event ``i``,
    ``labels[i]`` its class index (-1 if none), ``event_ids[i]`` its id."""

    members: list[np.ndarray]
    labels: np.ndarray
    event_ids: np.ndarray

    @classmethod
    def of(cls, event_ids: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> EventSets:
        """The events of ``rows`` (positions into ``event_ids`` and ``labels``)."""
        rows = np.asarray(rows, dtype=np.int64)
        unique, inverse = np.unique(np.asarray(event_ids)[rows].astype(str), return_inverse=True)
        members = [rows[inverse.reshape(-1) == i] for i in range(len(unique))]
        return cls(members, np.array([labels[m[0]] for m in members], dtype=np.int64), unique)

    def __len__(self) -> int:
        return len(self.members)


def batch_sets(
    sets: EventSets,
    chosen: np.ndarray,
    x: np.ndarray,
    mask: np.ndarray,
    max_traces: int = 0,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of events ``chosen`` as one flat batch: ``(x, mask, event_index)``, event
    index ``0..len(chosen)-1``. With ``max_traces`` > 0 and ``rng``, an event with more
    traces keeps a random ``max_traces`` of them."""
    rows, owner = [], []
    for j, e in enumerate(chosen):
        m = sets.members[int(e)]
        if max_traces > 0 and rng is not None and len(m) > max_traces:
            m = rng.choice(m, max_traces, replace=False)
        rows.append(m)
        owner.append(np.full(len(m), j, dtype=np.int64))
    r = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    return x[r], mask[r], np.concatenate(owner) if owner else np.zeros(0, dtype=np.int64)


def augment(
    x: np.ndarray, n_bands: int, tilt: float, crop: int, rng: np.random.Generator
) -> np.ndarray:
    """Training only: the per-trace CNN's spectral tilt (``tilt_jitter``) and a random crop
    of ``crop`` samples of each trace (0: none)."""
    if tilt > 0 and n_bands:
        x = tilt_jitter(x, n_bands, tilt, rng)
    if crop and crop < x.shape[-1]:
        starts = rng.integers(0, x.shape[-1] - crop + 1, len(x))
        x = np.stack([w[:, s : s + crop] for w, s in zip(x, starts, strict=True)])
    return x


def predict_sets(
    model: nn.Module,
    sets: EventSets,
    x: np.ndarray,
    mask: np.ndarray,
    device: torch.device,
    events_per_batch: int = 64,
) -> np.ndarray:
    """Event class probabilities ``(len(sets), n_classes)`` from all of each event's traces."""
    model.eval()
    out: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, len(sets), events_per_batch):
            chosen = np.arange(start, min(start + events_per_batch, len(sets)))
            bx, bm, bi = batch_sets(sets, chosen, x, mask)
            logits = model(
                torch.from_numpy(bx).to(device), torch.from_numpy(bm.astype(np.float32)).to(device),
                torch.from_numpy(bi).to(device), len(chosen),
            )  # fmt: skip
            out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    if out:
        return np.concatenate(out)
    n_classes = int(model.arch["encoder"]["n_classes"])  # type: ignore[index]
    return np.zeros((0, n_classes), dtype=np.float32)


def train_set_cnn(
    x: np.ndarray,
    mask: np.ndarray,
    train: EventSets,
    val: EventSets | None,
    config: CNNConfig,
    n_classes: int,
    device: torch.device,
    encoder_state: Mapping[str, torch.Tensor] | None = None,
) -> tuple[nn.Module, list[dict[str, float]], int]:
    """Train an :class:`EventSetCNN` on the events of ``train`` (preprocessed rows ``x``,
    ``mask``), class-weighted by event, with early stopping on ``val``'s event macro-F1 over
    the classes present there; without ``val`` every epoch runs and the last is kept. With
    ``encoder_state`` the per-trace encoder starts from that pretrained trunk
    (``pretrain.load_trunk``). Returns the model (eval mode, best state), the history and the
    best epoch."""
    from seismoflow.models.cnn import (
        BestEpoch,
        build_model,
        class_weights,
        deterministic,
        macro_f1,
    )

    n_bands = max(1, len(config.envelope_bands)) if config.envelope_bands else 0
    crop = int(round(config.crop_s * config.input_rate))
    with deterministic(config.seed):
        encoder = build_model(config, n_classes)
        if encoder_state is not None:
            from seismoflow.models.pretrain import load_trunk

            load_trunk(encoder, encoder_state)
        model = EventSetCNN(encoder, config.set_pooling, n_classes, config.dropout).to(device)
        y = train.labels
        keep = np.flatnonzero(y >= 0)
        weights = torch.tensor(class_weights(y[keep], n_classes), dtype=torch.float32)
        loss_fn = nn.CrossEntropyLoss(weight=weights.to(device))
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, config.epochs))
        val_labels = sorted(set(val.labels[val.labels >= 0].tolist())) if val else []
        history: list[dict[str, float]] = []
        best = BestEpoch(config.patience)
        per_batch = max(1, int(config.set_events_per_batch))
        for epoch in range(config.epochs):
            clock = time.perf_counter()
            rng = np.random.default_rng([config.seed, epoch])
            model.train()
            total, seen = 0.0, 0
            order = rng.permutation(keep)
            for start in range(0, len(order), per_batch):
                chosen = order[start : start + per_batch]
                bx, bm, bi = batch_sets(train, chosen, x, mask, config.set_max_traces, rng)
                bx = augment(bx, n_bands, config.tilt, crop, rng)
                target = torch.from_numpy(y[chosen]).to(device)
                opt.zero_grad(set_to_none=True)
                logits, trace_logits = model.logits(  # type: ignore[operator]
                    torch.from_numpy(np.ascontiguousarray(bx)).to(device),
                    torch.from_numpy(bm.astype(np.float32)).to(device),
                    torch.from_numpy(bi).to(device), len(chosen),
                )  # fmt: skip
                loss = loss_fn(logits.float(), target)
                if config.set_trace_loss > 0:
                    trace_target = target[torch.from_numpy(bi).to(device)]
                    trace_loss = loss_fn(trace_logits.float(), trace_target)
                    loss = loss + config.set_trace_loss * trace_loss
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(chosen)
                seen += len(chosen)
            sched.step()
            entry = {
                "epoch": float(epoch),
                "train_loss": total / max(seen, 1),
                "train_seconds": time.perf_counter() - clock,
            }
            if val is not None and len(val):
                probs = predict_sets(model, val, x, mask, device)
                entry["val_macro_f1"] = macro_f1(val.labels, probs.argmax(axis=1), val_labels)
            history.append(entry)
            log.info("set epoch %d %s", epoch, {k: round(v, 4) for k, v in entry.items()})
            if best.update(model, epoch, entry.get("val_macro_f1")):
                break
        best.restore(model)
    return model, history, best.epoch


def preprocess_rows(
    location: str, examples: pd.DataFrame, config: CNNConfig
) -> tuple[np.ndarray, ...]:
    """Every row's preprocessed model input, read from the store once: ``(x, mask)``."""
    from seismoflow.models.cnn import INFERENCE_BLOCK, _windows

    data = _windows(location, examples, config, None, INFERENCE_BLOCK)
    n, ch = len(examples), len(config.preprocess().channel_components)
    x: np.ndarray | None = None
    mask = np.zeros((n, ch), dtype=bool)
    for xb, mb, pos in data.iter_blocks():
        if x is None:
            x = np.zeros((n, *xb.shape[1:]), dtype=np.float32)
        x[pos], mask[pos] = xb, mb
    return (x if x is not None else np.zeros((0, ch, 0), dtype=np.float32)), mask


def set_out_of_fold(
    location: str,
    examples: pd.DataFrame,
    folds: np.ndarray,
    config: CNNConfig,
    device: str | None = None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Like :func:`seismoflow.models.cnn.cnn_out_of_fold` for a set-pooling model: for each
    fold ``k``, train on the events of the other folds but the next, stop early on the
    next, and give every vertical trace of fold ``k`` its event's probability (``CLASSES``
    order; NaN where not scored), so any pooling of an event's rows returns it."""
    from seismoflow.models.cnn import fold_inputs, label_indices, pick_device, pretrain_summary

    if tuple(config.components) != ("Z",):
        raise ValueError("set pooling is measured on vertical components only")
    folds, has_z = fold_inputs(examples, folds)
    classes = tuple(CLASSES)
    dev = pick_device(device)
    clock = time.perf_counter()
    x, mask = preprocess_rows(location, examples, config)
    read_s = time.perf_counter() - clock
    y = label_indices(examples["label"].tolist(), classes)
    events = examples["event_id"].astype(str).to_numpy()
    fold_ids = sorted(set(folds[folds >= 0].tolist()))
    probs = np.full((len(examples), len(classes)), np.nan, dtype=np.float32)
    per_fold: list[dict[str, Any]] = []
    pool = None
    if config.pretrain_epochs > 0:
        from seismoflow.models.pretrain import pretrain_on, pretraining_pool

        pool = pretraining_pool(location, config)  # no labelled window of any fold in it
    for i, k in enumerate(fold_ids):
        started = time.perf_counter()
        val_fold = fold_ids[(i + 1) % len(fold_ids)]
        known = has_z & (y >= 0)
        train_rows = np.flatnonzero(known & (folds >= 0) & (folds != k) & (folds != val_fold))
        train = EventSets.of(events, y, train_rows)
        val = EventSets.of(events, y, np.flatnonzero(known & (folds == val_fold)))
        test = EventSets.of(events, y, np.flatnonzero(has_z & (folds == k)))
        pretrained = None
        if pool is not None:  # this fold's training rows only, labels unused
            pretrained = pretrain_on(
                pool, (x[train_rows], mask[train_rows]), config, len(classes), dev
            )
        model, history, best_epoch = train_set_cnn(
            x, mask, train, val, config, len(classes), dev,
            pretrained.state if pretrained is not None else None,
        )  # fmt: skip
        p = predict_sets(model, test, x, mask, dev)
        for j, rows in enumerate(test.members):
            probs[rows] = p[j]
        per_fold.append(
            {
                "fold": k,
                "n_train_events": len(train),
                "n_val_events": len(val),
                "n_test_events": len(test),
                "epochs_run": len(history),
                "best_epoch": best_epoch,
                "best_val_macro_f1": max((h.get("val_macro_f1", 0.0) for h in history), default=0),
                "seconds": round(time.perf_counter() - started, 2),
                "read_seconds": round(read_s, 2) if i == 0 else 0.0,
                "pretrain": pretrain_summary(pretrained),
            }
        )
        log.info("set fold %s: %s", k, per_fold[-1])
    return probs, per_fold
