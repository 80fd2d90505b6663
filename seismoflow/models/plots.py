"""PNG plots of a training or prediction run (matplotlib, Agg canvas, no pyplot state).

Each function writes one PNG and returns its path; :func:`data_uri` turns a PNG into the
``data:image/png;base64,...`` form that Prefect's markdown artifacts (and the monitoring UI)
show inline.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def data_uri(path: Path) -> str:
    """``data:image/png;base64,...`` of a PNG file."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def confusion_png(metrics: Mapping[str, Any], title: str, path: Path) -> Path:
    """Confusion matrix (counts, rows = true class) of a :func:`metrics.classification_metrics`
    dict, with row-normalised shading."""
    classes = list(metrics["classes"])
    counts = np.asarray(metrics["confusion"], dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    fig = Figure(figsize=(1.2 * len(classes) + 2.5, 1.0 * len(classes) + 2))
    ax = fig.add_subplot()
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center",
                    color="white" if share[i, j] > 0.6 else "black")  # fmt: skip
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}\nmacro-F1 {metrics['macro_f1']:.2f}, accuracy {metrics['accuracy']:.2f}")
    return _save(fig, path)


def reliability_png(
    bins: Mapping[str, Sequence[Mapping[str, float]]], title: str, path: Path
) -> Path:
    """Reliability diagram: accuracy against mean confidence per confidence bin, one line per
    entry of ``bins`` (e.g. before and after calibration; points sized by count)."""
    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    for name, points in bins.items():
        conf = [p["confidence"] for p in points]
        acc = [p["accuracy"] for p in points]
        size = [10 + 2 * p["n"] for p in points]
        ax.plot(conf, acc, marker="", label=name)
        ax.scatter(conf, acc, s=size, alpha=0.6)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean confidence (top class)")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize="small")
    return _save(fig, path)


def embedding_png(
    xy: np.ndarray, labels: Sequence[Any] | np.ndarray, title: str, path: Path, legend: str = ""
) -> Path:
    """A 2-D map (PCA or t-SNE), one colour per label."""
    fig = Figure(figsize=(6.5, 5))
    ax = fig.add_subplot()
    values = np.asarray([str(v) for v in labels], dtype=object)
    finite = np.isfinite(xy).all(axis=1)
    for k, value in enumerate(sorted(set(values.tolist()))):
        sel = (values == value) & finite
        ax.scatter(xy[sel, 0], xy[sel, 1], s=6, alpha=0.7, color=f"C{k % 10}", label=value)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(title=legend or None, markerscale=2, fontsize="small", loc="best")
    return _save(fig, path)


def gallery_png(
    windows: Mapping[str, Sequence[tuple[str, np.ndarray]]],
    rate: float,
    path: Path,
    title: str = "example waveforms per predicted class",
) -> Path:
    """A grid of vertical-component waveforms: one column per class, each entry a
    ``(caption, samples)`` pair (preprocessed, unit RMS)."""
    classes = list(windows)
    n_rows = max((len(v) for v in windows.values()), default=0) or 1
    fig = Figure(figsize=(3.2 * max(len(classes), 1), 1.2 * n_rows + 0.8))
    axes = fig.subplots(n_rows, max(len(classes), 1), squeeze=False, sharex=True)
    for j, name in enumerate(classes):
        axes[0, j].set_title(name)
        for i in range(n_rows):
            ax = axes[i, j]
            ax.set_yticks([])
            if i < len(windows[name]):
                caption, y = windows[name][i]
                t = np.arange(len(y)) / rate
                ax.plot(t, y, lw=0.5, color=f"C{j % 10}")
                ax.text(0.01, 0.95, caption, transform=ax.transAxes, fontsize=6, va="top")
            else:
                ax.axis("off")
    fig.suptitle(title)
    return _save(fig, path)


def pick_gallery(
    examples: pd.DataFrame,
    predicted: Sequence[str] | np.ndarray,
    classes: Sequence[str],
    per_class: int,
    seed: int,
) -> dict[str, pd.DataFrame]:
    """Up to ``per_class`` rows per predicted class, drawn at random (seeded)."""
    rng = np.random.default_rng(seed)
    pred = np.asarray(predicted, dtype=object)
    out: dict[str, pd.DataFrame] = {}
    for name in classes:
        rows = np.flatnonzero(pred == name)
        if len(rows):
            take = np.sort(rng.choice(rows, size=min(per_class, len(rows)), replace=False))
            out[name] = examples.iloc[take]
    return out


def thumbnail_png(samples: np.ndarray, path: Path, width_in: float = 2.4) -> Path:
    """A small waveform sparkline (no axes) for tables: a few kilobytes of PNG."""
    fig = Figure(figsize=(width_in, 0.45))
    ax = fig.add_axes((0, 0, 1, 1))
    y = np.asarray(samples, dtype=np.float64)
    ax.plot(np.arange(len(y)), np.nan_to_num(y), lw=0.4, color="black")
    ax.set_axis_off()
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=60)
    return path
