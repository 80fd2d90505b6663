"""A residual 1-D CNN that classifies event and noise windows streamed from the store.

The network sees only waveforms: preprocessed to one rate and one band for every trace
(:mod:`seismoflow.models.windows`; by default 20 Hz, 1-8 Hz, read as log envelopes in six
half-octave bands at 2 Hz), with a mask channel per input channel. It never sees codes,
rates, coordinates, depths or magnitudes, which in the archive give away the source
collection and so the class.

Why envelopes by default: on the archive's site-grouped folds the same network on the
band-passed waveform overfits within a few epochs (training loss 0.25, validation macro-F1
0.47), while on log band envelopes it trains 10x faster and validates better (0.55-0.69);
see ``BENCHMARKS.md``.

Design (grown from the classic conv / batch norm / pooling / dense classifier): a strided
stem, residual blocks (two convolutions with batch norm, a projected shortcut when the
width or stride changes), global mean and max pooling over time so the window length is not
fixed, dropout, one hidden dense layer (the embedding) and the class logits. Training uses
class-weighted cross entropy, AdamW with a cosine schedule, early stopping on validation
macro-F1, mixed precision on CUDA only, and is deterministic for a seed on one device.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from seismoflow.errors import ModelDirectoryError, UnsafeModelError
from seismoflow.labels import CLASSES
from seismoflow.labels import NOISE as NOISE_CLASS
from seismoflow.models.windows import Preprocess, StoreWindows, collate_windows, describe

log = logging.getLogger(__name__)

FORMAT = "seismoflow-cnn"
FORMAT_VERSION = 1
WEIGHTS_FILE = "cnn.pt"
META_FILE = "cnn.json"


# Half-octave bands over 1-8 Hz: a band every trace supports (lowest native rate: 20 Hz).
HALF_OCTAVES: tuple[tuple[float, float], ...] = (
    (1.0, 1.4), (1.4, 2.0), (2.0, 2.8), (2.8, 4.0), (4.0, 5.7), (5.7, 8.0),
)  # fmt: skip


@dataclass(frozen=True)
class CNNConfig:
    """Hyper-parameters and preprocessing of the CNN (JSON-serialisable).

    ``sampling_rate`` (Hz) is the model's input rate, an integer divisor of the store's
    window rate. ``band`` (Hz) is one band every trace supports: the archive's lowest native
    rate is 20 Hz (Nyquist 10 Hz), so the upper corner stays below 10 Hz. ``components``
    is ``("Z",)`` or ``("Z", "N", "E")``; ``component_dropout`` is the probability of
    removing each horizontal of a training window. With ``envelope_bands`` (Hz) the network
    reads log envelopes in those sub-bands at ``envelope_rate`` (Hz), otherwise the band-passed
    waveform. Training augmentation: a random crop of ``crop_s`` seconds (0: none) and, on
    envelopes, random spectral tilts of std ``tilt`` (log10 units) and, with ``noise_mix`` > 0,
    the store's noise windows (the training rows labelled noise) mixed into that share of the
    event windows at a random level in ``noise_level`` (log10 units,
    ``StoreWindows.mix_noise``). With ``set_pooling`` (one of
    ``seismoflow.models.set_cnn.SET_POOLINGS``; empty: off) the cross-validation trains one
    prediction per event from all its vertical traces (``set_cnn``): up to
    ``set_max_traces`` random traces per event and epoch, ``set_events_per_batch`` events per
    step, and with ``set_trace_loss`` > 0 a per-trace loss of that weight beside the event
    loss. With ``pretrain_epochs`` > 0 the trunk starts from contrastive pretraining
    (``seismoflow.models.pretrain``) for that many epochs of ``pretrain_batch`` windows
    (learning rate ``pretrain_lr``, temperature ``pretrain_temperature``, projection to
    ``pretrain_dim``; chosen by the contrastive loss alone, no label seen) on up to
    ``pretrain_windows`` unlabelled vertical windows of the store at least
    ``pretrain_margin_s`` seconds from every catalogued origin and, with
    ``pretrain_training_rows``, the training rows' own windows (labels unused; in a
    cross-validation, each fold's training part only). ``block_size`` traces are read per
    store access, a training
    epoch is shuffled within ``shuffle_buffer`` windows, and up to ``cache_mb`` MiB of
    preprocessed input is kept between epochs.
    """

    sampling_rate: float = 20.0
    band: tuple[float, float] = (1.0, 8.0)
    components: tuple[str, ...] = ("Z",)
    component_dropout: float = 0.5
    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    dropout: float = 0.5
    patience: int = 12
    seed: int = 0
    widths: tuple[int, ...] = (16, 32, 48)
    kernel: int = 5
    hidden: int = 32
    envelope_bands: tuple[tuple[float, float], ...] = HALF_OCTAVES
    envelope_rate: float = 2.0
    crop_s: float = 100.0
    tilt: float = 0.2
    noise_mix: float = 0.0
    noise_level: tuple[float, float] = (-1.0, 0.5)
    set_pooling: str = ""
    set_max_traces: int = 8
    set_events_per_batch: int = 8
    set_trace_loss: float = 0.0
    pretrain_epochs: int = 0
    pretrain_windows: int = 2000
    pretrain_training_rows: bool = True
    pretrain_batch: int = 128
    pretrain_lr: float = 3e-3
    pretrain_temperature: float = 0.1
    pretrain_dim: int = 32
    pretrain_margin_s: float = 600.0
    block_size: int = 32
    shuffle_buffer: int = 512
    cache_mb: float = 256.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "band", tuple(float(b) for b in self.band))
        object.__setattr__(self, "components", tuple(str(c) for c in self.components))
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "noise_level", tuple(float(v) for v in self.noise_level))
        object.__setattr__(
            self, "envelope_bands", tuple((float(lo), float(hi)) for lo, hi in self.envelope_bands)
        )

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CNNConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown CNNConfig fields {sorted(unknown)}; known: {sorted(known)}")
        values: dict[str, Any] = {k: _tuples(v) for k, v in data.items()}
        return cls(**values)

    def preprocess(self) -> Preprocess:
        return Preprocess(
            self.sampling_rate,
            self.band,
            self.components,
            envelope_bands=self.envelope_bands,
            envelope_rate=self.envelope_rate,
        )

    @property
    def in_channels(self) -> int:
        return len(self.preprocess().channel_components)

    @property
    def input_rate(self) -> float:
        """The rate of the network's input (Hz): the envelope rate or the waveform rate."""
        return self.envelope_rate if self.envelope_bands else self.sampling_rate


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


class ResidualBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=pad, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel, padding=pad, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.skip: nn.Module = nn.Identity()
        if c_in != c_out or stride != 1:
            self.skip = nn.Sequential(
                nn.Conv1d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm1d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.skip(x))


class EventCNN(nn.Module):
    """Input ``(batch, channels, samples)`` + mask ``(batch, channels)`` -> logits.

    A channel is a component's waveform or one of its band envelopes; the mask (1 where the
    component was recorded) enters as one more constant channel per input channel.
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        widths: Sequence[int] = (16, 24, 32, 48),
        kernel: int = 7,
        hidden: int = 32,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        self.arch = {
            "name": "EventCNN",
            "in_channels": in_channels,
            "n_classes": n_classes,
            "widths": list(widths),
            "kernel": kernel,
            "hidden": hidden,
            "dropout": dropout,
        }
        self.stem = nn.Sequential(
            nn.Conv1d(2 * in_channels, widths[0], kernel, stride=2, padding=kernel // 2),
            nn.BatchNorm1d(widths[0]),
            nn.ReLU(),
        )
        self.blocks = nn.Sequential(
            *(
                ResidualBlock(c_in, c_out, kernel, stride=2)
                for c_in, c_out in zip(widths[:1] + widths[:-1], widths, strict=True)
            )
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * widths[-1], hidden), nn.ReLU())
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    def embed(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The penultimate layer: ``(batch, hidden)``."""
        m = mask[:, :, None].to(x.dtype)
        h = self.blocks(self.stem(torch.cat([x * m, m.expand_as(x)], dim=1)))
        return self.head(torch.cat([h.mean(dim=-1), h.amax(dim=-1)], dim=1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.out(self.embed(x, mask))


def build_model(config: CNNConfig, n_classes: int) -> EventCNN:
    return EventCNN(
        config.in_channels, n_classes, config.widths, config.kernel, config.hidden, config.dropout
    )


@dataclass
class BestEpoch:
    """Early stopping on a validation score: the best epoch so far and its weights, or, with
    no validation, the last epoch. Shared by the per-trace and the set trainers."""

    patience: int
    score: float = -1.0
    epoch: int = 0
    state: dict[str, Any] | None = None

    def update(self, model: nn.Module, epoch: int, score: float | None) -> bool:
        """Record ``epoch`` (``score`` None: no validation); True when patience ran out."""
        if score is None or score > self.score:
            self.score = float("nan") if score is None else score
            self.epoch = epoch
            self.state = copy.deepcopy(model.state_dict())
        return score is not None and epoch - self.epoch >= self.patience

    def restore(self, model: nn.Module) -> None:
        """Load the kept epoch's weights (if any epoch ran) and put ``model`` in eval mode."""
        if self.state is not None:
            model.load_state_dict(self.state)
        model.eval()


@dataclass
class CNNRun:
    """A trained model and how it was trained."""

    model: nn.Module
    config: CNNConfig
    classes: tuple[str, ...]
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    device: str = "cpu"
    seconds: float = 0.0
    pretrain: dict[str, Any] | None = None


def pretrain_summary(run: Any) -> dict[str, Any] | None:
    """What ``cnn.json`` and the CV's fold details record of a contrastive pretraining (a
    ``pretrain.PretrainRun``, or None)."""
    if run is None:
        return None
    last = run.history[-1] if run.history else {}
    return {
        "n_windows": run.n_windows,
        "epochs": len(run.history),
        "seconds": round(run.seconds, 2),
        "loss": last.get("loss"),
        "partner_accuracy": last.get("partner_accuracy"),
    }


def pick_device(prefer: str | None = None) -> torch.device:
    """``prefer`` if given, else CUDA when available, else CPU."""
    if prefer:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seeded, deterministic algorithms where torch has them; restores the global state."""
    was = torch.are_deterministic_algorithms_enabled()
    warn = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn_bench = torch.backends.cudnn.benchmark
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn)
        torch.backends.cudnn.benchmark = cudnn_bench


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)
    return contextlib.nullcontext()


def label_indices(labels: Sequence[Any], classes: Sequence[str]) -> np.ndarray:
    """Class index of each label, -1 where the label is not one of ``classes``."""
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index.get(str(v), -1) for v in labels], dtype=np.int64)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[int]) -> float:
    """Mean F1 over ``labels`` (each counted even when it is never predicted)."""
    scores = []
    for c in labels:
        tp = np.sum((y_true == c) & (y_pred == c))
        fp = np.sum((y_true != c) & (y_pred == c))
        fn = np.sum((y_true == c) & (y_pred != c))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(scores)) if scores else float("nan")


def event_macro_f1(
    probs: np.ndarray, y: np.ndarray, event_ids: np.ndarray, labels: Sequence[int]
) -> float:
    """Macro-F1 over ``labels`` of events: mean probability over each event's traces."""
    frame = pd.DataFrame(probs).groupby(event_ids, sort=True)
    mean = frame.mean().to_numpy()
    truth = pd.Series(y).groupby(event_ids, sort=True).first().to_numpy()
    return macro_f1(truth, mean.argmax(axis=1), labels)


def noise_bank(
    location: str,
    examples: pd.DataFrame,
    config: CNNConfig,
    labels: np.ndarray,
    classes: Sequence[str],
) -> np.ndarray | None:
    """The preprocessed input of the training rows labelled noise (for ``noise_mix``), or
    None when the augmentation is off or there are none."""
    if config.noise_mix <= 0 or not config.envelope_bands or NOISE_CLASS not in classes:
        return None
    rows = np.flatnonzero(labels == list(classes).index(NOISE_CLASS))
    if not len(rows):
        return None
    data = _windows(location, examples.iloc[rows], config, labels[rows])
    return np.stack([item[0] for item in data]).astype(np.float32)


# Traces read and preprocessed per store access for inference: the order of inference does
# not matter, and preprocessing a block costs a fixed overhead per call; beyond ~128 traces
# (13 MB of float64 vertical samples at 100 Hz) the block's arrays leave the cache and
# preprocessing slows down (per CPU second, 256 against 128: ~0.85x, issue 16).
INFERENCE_BLOCK = 128


def _windows(
    location: str,
    examples: pd.DataFrame,
    config: CNNConfig,
    labels: np.ndarray | None,
    block_size: int | None = None,
    **kw: Any,
) -> StoreWindows:
    return StoreWindows(
        location,
        examples["group"].astype(str).tolist(),
        examples["trace"].astype(int).tolist(),
        config.preprocess(),
        labels,
        block_size=block_size or config.block_size,
        shuffle_buffer=config.shuffle_buffer,
        cache_bytes=int(config.cache_mb * 2**20),
        **kw,
    )


def _loader(dataset: StoreWindows, batch_size: int) -> DataLoader[Any]:
    return DataLoader(dataset, batch_size=batch_size, num_workers=0, collate_fn=collate_windows)


def _inference_batches(
    dataset: StoreWindows, batch_size: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
    """Batches of at most ``batch_size`` windows cut from the dataset's preprocessed blocks
    (no Python step per window; a batch never spans two blocks, so never two groups)."""
    for x, mask, positions in dataset.iter_blocks():
        xt = torch.from_numpy(x)
        mt = torch.from_numpy(mask.astype(np.float32))
        for start in range(0, len(positions), batch_size):
            stop = start + batch_size
            yield xt[start:stop].to(device), mt[start:stop].to(device), positions[start:stop]


def _predict(
    model: nn.Module, dataset: StoreWindows, device: torch.device, batch_size: int, embed: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    model.eval()
    n = len(dataset)
    probs: np.ndarray | None = None
    emb: np.ndarray | None = None
    with torch.inference_mode():
        for x, mask, pos in _inference_batches(dataset, batch_size, device):
            with _autocast(device):
                e = model.embed(x, mask)  # type: ignore[operator]
                logits = model.out(e)  # type: ignore[operator]
            p = torch.softmax(logits.float(), dim=1).cpu().numpy()
            if probs is None:
                probs = np.zeros((n, p.shape[1]), dtype=np.float32)
            probs[pos] = p
            if embed:
                if emb is None:
                    emb = np.zeros((n, e.shape[1]), dtype=np.float32)
                emb[pos] = e.float().cpu().numpy()
    if probs is None:
        out_dim = int(model.arch["n_classes"])  # type: ignore[index]
        probs = np.zeros((0, out_dim), dtype=np.float32)
    return probs, emb


def predict_cnn(
    model: nn.Module,
    location: str,
    examples: pd.DataFrame,
    config: CNNConfig,
    *,
    device: str | None = None,
    embeddings: bool = False,
    drop_components: Sequence[str] = (),
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Class probabilities ``(n, n_classes)`` for the rows of ``examples`` (in row order),
    and with ``embeddings`` the penultimate layer ``(n, hidden)`` too.

    ``drop_components`` (e.g. ``("N", "E")``) hides those components from the model, for
    vertical-only evaluation of a three-component model.
    """
    dev = pick_device(device)
    model.to(dev)
    dataset = _windows(
        location, examples, config, None, max(config.block_size, INFERENCE_BLOCK),
        drop=drop_components,
    )  # fmt: skip
    probs, emb = _predict(model, dataset, dev, 4 * config.batch_size, embeddings)
    if embeddings:
        assert emb is not None or len(examples) == 0
        hidden = int(model.arch["hidden"])  # type: ignore[index]
        return probs, emb if emb is not None else np.zeros((0, hidden), dtype=np.float32)
    return probs


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Balanced weights ``n / (k * n_c)`` over the ``k`` classes present; 0 for absent ones."""
    counts = np.bincount(labels[labels >= 0], minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(n_classes)
    w[present] = counts.sum() / (present.sum() * counts[present])
    return w


def train_cnn(
    location: str,
    examples: pd.DataFrame,
    split: np.ndarray,
    config: CNNConfig,
    *,
    classes: Sequence[str] = CLASSES,
    device: str | None = None,
    encoder_state: Mapping[str, torch.Tensor] | None = None,
) -> CNNRun:
    """Train on the rows whose ``split`` is ``"train"``, stop early on ``"val"`` macro-F1.

    ``encoder_state``: a pretrained trunk to start from (``pretrain.load_trunk``); without
    it and with ``config.pretrain_epochs`` > 0 the trunk is pretrained here first, on the
    store's unlabelled windows and the training rows (``pretrain.pretrain_on``).

    The validation score is event-level (an event's probabilities are the mean over its
    traces; noise windows are events of their own), as in the evaluation.

    Rows whose ``label`` is not one of ``classes`` are left out (and counted in the log).
    Without validation rows every epoch runs and the last one is kept.
    """
    if config.set_pooling:
        raise ValueError(
            "set_pooling is measured by cross-validation only (set_cnn.set_out_of_fold); "
            "the CNN refit and used for prediction classifies traces"
        )
    classes = tuple(classes)
    split = np.asarray(split).astype(str)
    if len(split) != len(examples):
        raise ValueError(f"split has {len(split)} entries for {len(examples)} examples")
    y = label_indices(examples["label"].tolist(), classes)
    unknown = int(np.sum((y < 0) & np.isin(split, ["train", "val"])))
    if unknown:
        log.warning("%d train/val rows have a label outside %s: left out", unknown, classes)
    train = np.flatnonzero((split == "train") & (y >= 0))
    val = np.flatnonzero((split == "val") & (y >= 0))
    if len(train) == 0:
        raise ValueError("no training rows: split has no 'train' rows with a known label")
    dev = pick_device(device)
    started = time.perf_counter()
    pretrained = None
    if encoder_state is None and config.pretrain_epochs > 0:
        from seismoflow.models.pretrain import pretrain_on, pretraining_pool
        from seismoflow.models.set_cnn import preprocess_rows

        training = preprocess_rows(location, examples.iloc[train], config)
        pretrained = pretrain_on(
            pretraining_pool(location, config), (training[0], training[1]), config,
            len(classes), dev,
        )  # fmt: skip
        encoder_state = pretrained.state
    with deterministic(config.seed):
        model = build_model(config, len(classes)).to(dev)
        if encoder_state is not None:
            from seismoflow.models.pretrain import load_trunk

            load_trunk(model, encoder_state)
        train_set = _windows(
            location, examples.iloc[train], config, y[train], shuffle=True, seed=config.seed,
            component_dropout=config.component_dropout, tilt=config.tilt,
            crop=int(round(config.crop_s * config.input_rate)),
            noise_bank=noise_bank(location, examples.iloc[train], config, y[train], classes),
            noise_mix=config.noise_mix, noise_level=config.noise_level,
            noise_label=list(classes).index(NOISE_CLASS) if NOISE_CLASS in classes else -1,
        )  # fmt: skip
        val_set = _windows(location, examples.iloc[val], config, y[val])
        weights = torch.tensor(class_weights(y[train], len(classes)), dtype=torch.float32)
        loss_fn = nn.CrossEntropyLoss(weight=weights.to(dev))
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, config.epochs))
        scaler = torch.amp.GradScaler(
            "cuda", enabled=dev.type == "cuda" and not torch.cuda.is_bf16_supported()
        )
        val_labels = sorted(set(y[val].tolist()))
        val_events = (
            examples["event_id"].astype(str).to_numpy()[val]
            if "event_id" in examples
            else np.arange(len(val)).astype(str)
        )
        history: list[dict[str, float]] = []
        best = BestEpoch(config.patience)
        for epoch in range(config.epochs):
            clock = time.perf_counter()
            model.train()
            train_set.set_epoch(epoch)
            total, seen = 0.0, 0
            for batch in _loader(train_set, config.batch_size):
                x, mask = batch["x"].to(dev), batch["mask"].to(dev)
                target = batch["label"].to(dev)
                opt.zero_grad(set_to_none=True)
                with _autocast(dev):
                    loss = loss_fn(model(x, mask).float(), target)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                total += float(loss.detach()) * len(target)
                seen += len(target)
            sched.step()
            train_s = time.perf_counter() - clock
            entry = {
                "epoch": float(epoch),
                "train_loss": total / max(seen, 1),
                "train_seconds": train_s,
                "train_windows_per_s": seen / train_s if train_s > 0 else float("nan"),
            }
            if len(val):
                probs, _ = _predict(model, val_set, dev, 4 * config.batch_size, False)
                p = np.clip(probs[np.arange(len(val)), y[val]], 1e-7, 1.0)
                entry["val_loss"] = float(-np.mean(np.log(p)))
                entry["val_trace_macro_f1"] = macro_f1(y[val], probs.argmax(axis=1), val_labels)
                entry["val_macro_f1"] = event_macro_f1(probs, y[val], val_events, val_labels)
            history.append(entry)
            log.info("epoch %d %s", epoch, {k: round(v, 4) for k, v in entry.items()})
            if best.update(model, epoch, entry.get("val_macro_f1")):
                break
        best.restore(model)
    return CNNRun(
        model=model,
        config=config,
        classes=classes,
        history=history,
        best_epoch=best.epoch,
        device=str(dev),
        seconds=time.perf_counter() - started,
        pretrain=pretrain_summary(pretrained),
    )


def save_cnn(run: CNNRun, directory: Path) -> dict[str, Any]:
    """Write ``cnn.pt`` (the state dict: plain tensors only) and ``cnn.json`` (config,
    classes, architecture, preprocessing, training history); return the metadata."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in run.model.state_dict().items()}
    torch.save(state, directory / WEIGHTS_FILE)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "weights": WEIGHTS_FILE,
        "classes": list(run.classes),
        "config": run.config.to_dict(),
        "architecture": dict(run.model.arch),  # type: ignore[arg-type]
        "preprocessing": describe(run.config.preprocess()),
        "best_epoch": run.best_epoch,
        "history": run.history,
        "device": run.device,
        "seconds": run.seconds,
        "pretrain": run.pretrain,
        "torch": torch.__version__,
    }
    (directory / META_FILE).write_text(json.dumps(meta, indent=2))
    return meta


def load_cnn(directory: Path) -> tuple[nn.Module, CNNConfig, tuple[str, ...]]:
    """Load a model written by :func:`save_cnn` (on CPU, in eval mode).

    The weights are read with ``torch.load(weights_only=True)``: a file holding anything but
    tensors (a pickled object, code) is refused with ``ValueError``.
    """
    directory = Path(directory)
    meta_path, weights_path = directory / META_FILE, directory / WEIGHTS_FILE
    for path in (meta_path, weights_path):
        if not path.is_file():
            raise ModelDirectoryError(f"{path} is missing; is {directory} a CNN model directory?")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ModelDirectoryError(
            f"{meta_path} is not a {FORMAT} model (format {meta.get('format')!r})"
        )
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means: refuse the file
        raise UnsafeModelError(
            f"refusing {weights_path}: it holds more than plain tensors "
            f"({exc.__class__.__name__}); "
            "only state dicts written by save_cnn are loaded"
        ) from exc
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise UnsafeModelError(f"refusing {weights_path}: not a state dict of named tensors")
    arch = dict(meta["architecture"])
    if arch.pop("name", None) != "EventCNN":
        raise ModelDirectoryError(f"{meta_path}: unknown architecture {meta['architecture']!r}")
    model = EventCNN(**arch)
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, CNNConfig.from_dict(meta["config"]), tuple(meta["classes"])


def cnn_site_cv(
    location: str, examples: pd.DataFrame, folds: np.ndarray, config: CNNConfig
) -> dict[str, Any]:
    """Cross-validation grouped by source site, evaluated on vertical components only.

    For each fold ``k``: test on fold ``k``, stop early on fold ``k + 1`` (validation), train
    on the others. Windows without a vertical component are neither trained on (for a
    vertical-only model) nor scored; horizontals are hidden from the model when scoring.
    Event level: an event's probability is the mean over its traces, its class the argmax
    over all classes (an event called noise is a miss). Returns the out-of-fold metrics:
    ``event_macro_f1`` over earthquake / explosion / surface event on the catalogued events,
    ``explosion_f1``, ``noise_recall`` over noise windows (each its own "event"),
    ``event_macro_f1_with_noise`` (noise windows counted as events too, so noise called an
    earthquake lowers the earthquake precision), the ``trace`` and ``event`` metric blocks
    over everything scored, and per-fold details.
    """
    from seismoflow.labels import EVENT_CLASSES, NOISE
    from seismoflow.models.metrics import evaluate, restrict

    started = time.perf_counter()
    classes = tuple(CLASSES)
    probs, per_fold = cnn_out_of_fold(location, examples, folds, config)
    scored = np.flatnonzero(np.isfinite(probs).all(axis=1))
    labels = examples["label"].astype(str).to_numpy()
    events = examples["event_id"].astype(str).to_numpy()
    metrics = evaluate(probs[scored], labels[scored], events[scored], classes)
    # The event metric over catalogued events only; noise windows are scored by recall.
    catalogued = scored[labels[scored] != NOISE]
    on_events = evaluate(probs[catalogued], labels[catalogued], events[catalogued], classes)
    event_classes = list(EVENT_CLASSES)
    noise = metrics["trace"]["per_class"][NOISE]
    return {
        "config": config.to_dict(),
        "n_folds": len(per_fold),
        "n_scored": len(scored),
        "n_events": on_events["event"]["n"],
        "event_macro_f1": restrict(on_events["event"], event_classes)["macro_f1"],
        "explosion_f1": on_events["event"]["per_class"]["explosion"]["f1"],
        "event_per_class": {c: on_events["event"]["per_class"][c] for c in event_classes},
        "event_confusion": on_events["event"]["confusion"],
        "trace_macro_f1": restrict(on_events["trace"], event_classes)["macro_f1"],
        "noise_recall": noise["recall"] if noise["support"] else None,
        "noise_windows": noise["support"],
        "event_macro_f1_with_noise": restrict(metrics["event"], event_classes)["macro_f1"],
        "trace": metrics["trace"],
        "event": metrics["event"],
        "folds": per_fold,
        "seconds": round(time.perf_counter() - started, 2),
    }


def fold_inputs(
    examples: pd.DataFrame, folds: Sequence[int] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The fold id of each example (int64; one per example, checked) and which examples have
    a vertical component (all of them when ``examples`` has no ``has_z`` column)."""
    ids = np.asarray(folds, dtype=np.int64)
    if len(ids) != len(examples):
        raise ValueError(f"{len(ids)} fold ids for {len(examples)} examples")
    has_z = (
        examples["has_z"].to_numpy(dtype=bool)
        if "has_z" in examples
        else np.ones(len(examples), dtype=bool)
    )
    return ids, has_z


def cnn_out_of_fold(
    location: str,
    examples: pd.DataFrame,
    folds: np.ndarray,
    config: CNNConfig,
    device: str | None = None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Out-of-fold class probabilities (``CLASSES`` order; NaN where not scored: rows
    without a vertical, or a fold id < 0) and per-fold details. For each fold ``k``: test on
    ``k``, stop early on the next fold, train on the others (vertical components only).
    With ``config.set_pooling``, one prediction per event (``set_cnn.set_out_of_fold``)."""
    if config.set_pooling:
        from seismoflow.models.set_cnn import set_out_of_fold

        return set_out_of_fold(location, examples, folds, config, device)
    folds, has_z = fold_inputs(examples, folds)
    usable = has_z if config.components == ("Z",) else np.ones(len(examples), dtype=bool)
    fold_ids = sorted(set(folds[folds >= 0].tolist()))
    classes = tuple(CLASSES)
    horizontals = tuple(c for c in config.components if c != "Z")
    probs = np.full((len(examples), len(classes)), np.nan, dtype=np.float32)
    per_fold: list[dict[str, Any]] = []
    pretraining = _fold_pretraining(location, examples, config)
    y = label_indices(examples["label"].tolist(), classes)
    for i, k in enumerate(fold_ids):
        val_fold = fold_ids[(i + 1) % len(fold_ids)]
        split = np.where(folds == k, "test", np.where(folds == val_fold, "val", "train"))
        split = np.where(usable | (split == "test"), split, "unused")
        pretrained = None
        if pretraining is not None:
            from seismoflow.models.pretrain import pretrain_on

            pool, (x_all, m_all) = pretraining
            rows = np.flatnonzero((split == "train") & (y >= 0))
            pretrained = pretrain_on(
                pool, (x_all[rows], m_all[rows]), config, len(classes), pick_device(device)
            )
        run = train_cnn(
            location, examples, split, config, classes=classes, device=device,
            encoder_state=pretrained.state if pretrained is not None else None,
        )  # fmt: skip
        test = np.flatnonzero((folds == k) & has_z)
        clock = time.perf_counter()
        p = predict_cnn(
            run.model, location, examples.iloc[test], config, device=device,
            drop_components=horizontals,
        )  # fmt: skip
        assert isinstance(p, np.ndarray)
        infer_s = time.perf_counter() - clock
        probs[test] = p
        train_s = sum(h["train_seconds"] for h in run.history)
        per_fold.append(
            {
                "fold": k,
                "n_train": int(np.sum(split == "train")),
                "n_val": int(np.sum(split == "val")),
                "n_test": len(test),
                "epochs_run": len(run.history),
                "best_epoch": run.best_epoch,
                "best_val_macro_f1": max(
                    (h.get("val_macro_f1", float("nan")) for h in run.history), default=0.0
                ),
                "seconds": round(run.seconds + infer_s, 2),
                "train_windows_per_s": round(
                    sum(h["train_windows_per_s"] * h["train_seconds"] for h in run.history)
                    / max(train_s, 1e-9),
                    2,
                ),
                "inference_windows_per_s": round(len(test) / max(infer_s, 1e-9), 2),
                "pretrain": pretrain_summary(pretrained),
            }
        )
        log.info("fold %s: %s", k, per_fold[-1])
    return probs, per_fold


def _fold_pretraining(
    location: str, examples: pd.DataFrame, config: CNNConfig
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None:
    """For a cross-validation with pretraining: the store's unlabelled pool (shared by the
    folds: no labelled window of any fold is in it) and every row's preprocessed input (each
    fold pretrains on its own training rows only); None when pretraining is off."""
    if config.pretrain_epochs <= 0:
        return None
    from seismoflow.models.pretrain import pretraining_pool
    from seismoflow.models.set_cnn import preprocess_rows

    rows = preprocess_rows(location, examples, config)
    return pretraining_pool(location, config), (rows[0], rows[1])
