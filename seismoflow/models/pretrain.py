"""Self-supervised (contrastive) pretraining of the CNN's per-trace trunk.

SimCLR (Chen et al. 2020) on the CNN's own input: each window gives two views by the
training augmentations of :func:`seismoflow.models.set_cnn.augment` (independent random
crops, spectral tilts and per-band gains), both go through the ``EventCNN`` trunk (its
``embed``: stem, residual blocks, pooling, hidden layer, with its dropout) and a small
projection head, and the NT-Xent loss pulls the two views of a window together and pushes
them from the other windows of the batch. Only the trunk's weights are kept: the
classifiers (:func:`seismoflow.models.cnn.train_cnn`, the set CNN) start from them and train
every layer on the labels.

Which windows: the store's unlabelled vertical windows away from every catalogued origin and
every labelled window (:mod:`seismoflow.models.unlabelled`), and, inside a cross-validation,
the training part's own windows with their labels dropped, never a test-fold window
(``CNNConfig.pretrain_epochs`` and its neighbours say how much).

Plain functions: no store access here except through :func:`pretrained_state`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from seismoflow.models.set_cnn import augment

if TYPE_CHECKING:  # cnn.py imports this module lazily: no import cycle at run time
    from seismoflow.models.cnn import CNNConfig

log = logging.getLogger(__name__)

# The trunk: every EventCNN parameter but the class layer ``out``.
HEAD_PREFIX = "out."


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent loss of two views ``(n, d)`` of ``n`` windows: cross entropy of finding each
    view's partner among the other ``2n - 1`` views by cosine similarity / ``temperature``."""
    n = z1.shape[0]
    z = nn.functional.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return nn.functional.cross_entropy(sim, target)


def projection_head(hidden: int, out: int) -> nn.Module:
    """The SimCLR projection ``hidden -> hidden -> out`` (dropped after pretraining)."""
    return nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out))


@dataclass
class PretrainRun:
    """The pretrained trunk's weights (``EventCNN`` state dict without ``out``), per-epoch
    history (loss, top-1 accuracy of finding a view's partner) and seconds."""

    state: dict[str, torch.Tensor]
    history: list[dict[str, float]] = field(default_factory=list)
    n_windows: int = 0
    seconds: float = 0.0


def pretrain_encoder(
    x: np.ndarray,
    mask: np.ndarray,
    config: CNNConfig,
    n_classes: int,
    device: torch.device,
) -> PretrainRun:
    """Contrastive pretraining of an ``EventCNN`` trunk on preprocessed windows ``x``
    ``(n, channels, samples)`` with ``mask`` ``(n, channels)``, for
    ``config.pretrain_epochs`` epochs of batches of ``config.pretrain_batch`` windows
    (AdamW at ``config.pretrain_lr``, cosine schedule, dropout off, seeded by
    ``config.seed``)."""
    from seismoflow.models.cnn import build_model, deterministic

    started = time.perf_counter()
    n_bands = len(config.envelope_bands)
    crop = int(round(config.crop_s * config.input_rate))
    per_batch = max(2, int(config.pretrain_batch))
    with deterministic(config.seed):
        model = build_model(config, n_classes).to(device)
        head = projection_head(config.hidden, config.pretrain_dim).to(device)
        params = [*model.parameters(), *head.parameters()]
        opt = torch.optim.AdamW(params, lr=config.pretrain_lr, weight_decay=config.weight_decay)
        epochs = max(1, config.pretrain_epochs)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        history: list[dict[str, float]] = []
        for epoch in range(config.pretrain_epochs):
            clock = time.perf_counter()
            rng = np.random.default_rng([config.seed, 7919, epoch])
            model.train()
            head.train()
            _no_dropout(model)
            total, hits, seen = 0.0, 0, 0
            order = rng.permutation(len(x))
            for start in range(0, len(order) - 1, per_batch):
                rows = order[start : start + per_batch]
                if len(rows) < 2:  # one window has no negatives
                    continue
                m = torch.from_numpy(mask[rows].astype(np.float32)).to(device)
                views = [
                    torch.from_numpy(np.ascontiguousarray(augment(x[rows], n_bands, config.tilt,
                                                                  crop, rng))).to(device)
                    for _ in range(2)
                ]  # fmt: skip
                z1, z2 = (head(model.embed(v, m)) for v in views)
                loss = nt_xent(z1, z2, config.pretrain_temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    hits += partner_hits(z1.detach(), z2.detach())
                total += float(loss.detach()) * len(rows)
                seen += len(rows)
            sched.step()
            entry = {
                "epoch": float(epoch),
                "loss": total / max(seen, 1),
                "partner_accuracy": hits / max(2 * seen, 1),
                "seconds": time.perf_counter() - clock,
            }
            history.append(entry)
            log.info("pretrain epoch %d %s", epoch, {k: round(v, 4) for k, v in entry.items()})
    model.eval()
    state = {
        k: v.detach().cpu().clone()
        for k, v in model.state_dict().items()
        if not k.startswith(HEAD_PREFIX)
    }
    return PretrainRun(state, history, len(x), time.perf_counter() - started)


def _no_dropout(model: nn.Module) -> None:
    """Dropout off (batch norm still in training mode): the trunk's 0.5 dropout before the
    hidden layer, meant against overfitting few labels, drowns the contrastive signal
    (on 800 of the archive's windows, 40 epochs: partner accuracy 8% with it, 61% without)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.eval()


def partner_hits(z1: torch.Tensor, z2: torch.Tensor) -> int:
    """How many of the ``2n`` views have their partner as nearest other view (cosine)."""
    n = z1.shape[0]
    z = nn.functional.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = (z @ z.T).fill_diagonal_(float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return int((sim.argmax(dim=1) == partner).sum())


def load_trunk(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy a pretrained trunk into ``model`` (an ``EventCNN``); its class layer keeps its
    fresh weights. Refuses a state whose names or shapes do not fit the trunk."""
    own = model.state_dict()
    trunk = {k for k in own if not k.startswith(HEAD_PREFIX)}
    if set(state) != trunk:
        raise ValueError(
            f"pretrained state does not fit the CNN: missing {sorted(trunk - set(state))[:3]}, "
            f"unexpected {sorted(set(state) - trunk)[:3]}"
        )
    for k, v in state.items():
        if own[k].shape != v.shape:
            raise ValueError(f"pretrained {k} has shape {tuple(v.shape)}, the CNN {own[k].shape}")
    model.load_state_dict({**own, **state})


def pretraining_pool(location: str, config: CNNConfig) -> tuple[np.ndarray, np.ndarray]:
    """The store's unlabelled windows for pretraining, preprocessed (``config.pretrain_windows``
    drawn, ``config.pretrain_margin_s`` from every catalogued origin): ``(x, mask)``, empty
    when none are asked for. Shared by every fold of a cross-validation: no labelled window,
    of any fold, is among them."""
    prep = config.preprocess()
    if config.pretrain_windows <= 0:
        ch = len(prep.channel_components)
        return np.zeros((0, ch, 0), dtype=np.float32), np.zeros((0, ch), dtype=bool)
    from seismoflow.models.unlabelled import unlabelled_inputs

    x, mask, _ = unlabelled_inputs(
        location, prep, config.pretrain_windows, margin_s=config.pretrain_margin_s,
        seed=config.seed,
    )  # fmt: skip
    return x, mask


def pretrain_on(
    pool: tuple[np.ndarray, np.ndarray],
    training: tuple[np.ndarray, np.ndarray] | None,
    config: CNNConfig,
    n_classes: int,
    device: torch.device,
) -> PretrainRun:
    """Pretrain on the unlabelled ``pool`` plus, with ``config.pretrain_training_rows``, the
    ``training`` windows (``(x, mask)`` of rows the caller may train on; their labels are not
    used)."""
    parts = [pool] if len(pool[0]) else []
    if training is not None and config.pretrain_training_rows and len(training[0]):
        parts.append(training)
    if sum(len(p[0]) for p in parts) < 2:
        raise ValueError("contrastive pretraining needs at least two windows")
    x = np.concatenate([p[0] for p in parts])
    mask = np.concatenate([p[1] for p in parts])
    run = pretrain_encoder(x, mask, config, n_classes, device)
    log.info(
        "pretrained on %d windows (%d unlabelled) in %.1f s; last epoch %s",
        len(x), len(pool[0]), run.seconds, run.history[-1] if run.history else {},
    )  # fmt: skip
    return run
