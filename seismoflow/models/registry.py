"""Model directories: one new directory per training run, and safe loading.

Layout of ``{models_dir}/{model_id}/`` (what ``seismoflow predict --model`` takes)::

    model.json            metadata: classes, window (rate, length, normalisation), feature
                          names, training-data fingerprint, metrics, code version, flow run,
                          and the sha256 of every model file
    features/*.skops      scikit-learn pipelines (skops format: no pickle)
    cnn/                  the CNN (``seismoflow.models.cnn.save_cnn``: weights + JSON config)
    plots/*.png           confusion matrices, maps, waveform gallery

``model_id`` is the UTC time of the run and a short hash (``20261125T153000Z-3f2a9c1d``), so
directories sort by time and two runs never share one.

Loading never unpickles: skops files are loaded with an explicit list of trusted types and
refused (:class:`UnsafeModelError`) when they hold any other type; every file must also
match the sha256 recorded in ``model.json``; the CNN is read with
``torch.load(weights_only=True)`` by ``load_cnn``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import skops.io as sio

import seismoflow
from seismoflow.errors import ModelDirectoryError, UnsafeModelError
from seismoflow.models.sklearn_models import FeatureModelConfig, FeatureModels

METADATA = "model.json"
FORMAT_VERSION = 1

# Types inside our pipelines that skops does not trust by default. Nothing else is loaded.
TRUSTED_TYPES: tuple[str, ...] = (
    "numpy.dtype",
    "sklearn.tree._tree.Tree",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def code_version() -> dict[str, str | None]:
    """seismoflow's version and, when run from a git checkout, its commit."""
    commit: str | None = None
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(seismoflow.__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if proc.returncode == 0:
            commit = proc.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"seismoflow": seismoflow.__version__, "git_commit": commit}


def new_model_id(fingerprint: str, now: dt.datetime | None = None) -> str:
    """``YYYYmmddTHHMMSSZ-{8 hex}``: the UTC time, then a hash of the time and the data."""
    now = now or dt.datetime.now(dt.UTC)
    salt = f"{now.isoformat()}|{fingerprint}".encode()
    return f"{now:%Y%m%dT%H%M%SZ}-{hashlib.sha256(salt).hexdigest()[:8]}"


def create_model_dir(models_dir: str | Path, fingerprint: str) -> Path:
    """A new, empty model directory under ``models_dir`` (never an existing one)."""
    base = Path(models_dir)
    base.mkdir(parents=True, exist_ok=True)
    for attempt in range(100):
        model_id = new_model_id(f"{fingerprint}|{attempt}")
        path = base / model_id
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise ModelDirectoryError(f"could not create a new model directory under {base}")


def save_sklearn(model: Any, path: Path) -> str:
    """Write a scikit-learn object in skops format; return the file's sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sio.dump(model, path)
    untrusted = set(sio.get_untrusted_types(file=path)) - set(TRUSTED_TYPES)
    if untrusted:
        path.unlink()
        raise UnsafeModelError(
            f"{path.name} would need types {sorted(untrusted)} to load; add them to "
            "seismoflow.models.registry.TRUSTED_TYPES only after checking they run no code"
        )
    return sha256_file(path)


def load_sklearn(path: Path) -> Any:
    """Load a skops file, refusing pickles and any type outside :data:`TRUSTED_TYPES`."""
    try:
        untrusted = set(sio.get_untrusted_types(file=path))
    except Exception as exc:  # noqa: BLE001 - a pickle or anything else that is not skops
        raise UnsafeModelError(
            f"{path} is not a skops model file ({type(exc).__name__}); refusing to load it. "
            "Model files are never unpickled: retrain with `seismoflow train`"
        ) from exc
    unknown = sorted(untrusted - set(TRUSTED_TYPES))
    if unknown:
        raise UnsafeModelError(
            f"{path} holds types {unknown} that could run code when loaded; refusing it"
        )
    return sio.load(path, trusted=list(TRUSTED_TYPES))


def write_metadata(directory: Path, metadata: Mapping[str, Any]) -> Path:
    """Write ``model.json`` (with the format version and the sha256 of every model file)."""
    files = {
        str(p.relative_to(directory)): sha256_file(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != METADATA and "plots" not in p.relative_to(directory).parts
    }
    doc = {"format_version": FORMAT_VERSION, **metadata, "model_id": directory.name}
    doc["files"] = files
    path = directory / METADATA
    path.write_text(json.dumps(doc, indent=2, sort_keys=True, default=_json_default))
    return path


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def model_file(directory: str | Path, name: str) -> Path:
    """``directory / name``, refused unless it resolves inside the model directory.

    Checked before anything reads the file: a ``model.json`` naming ``../x``, an absolute
    path or a link leading out of the directory must not make ``predict`` load that file.
    """
    base = Path(directory).resolve()
    path = Path(directory) / name
    if not path.resolve().is_relative_to(base):
        raise ModelDirectoryError(
            f"{Path(directory) / METADATA} names the file {name!r}, which resolves to "
            f"{path.resolve()}, outside the model directory {base}; refusing to read it. "
            "Use a model directory written by `seismoflow train`, unaltered (model files "
            "are regular files inside it)"
        )
    return path


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """``model.json`` of a model directory, with a message that says what to pass instead."""
    path = Path(directory) / METADATA
    if path.is_file():
        path = model_file(directory, METADATA)
    if not path.is_file():
        raise ModelDirectoryError(
            f"{directory} is not a model directory (no {METADATA}); pass one of the "
            "directories `seismoflow train --models-dir DIR` writes under DIR"
        )
    doc = json.loads(path.read_text())
    if doc.get("format_version") != FORMAT_VERSION:
        raise ModelDirectoryError(
            f"{path} has format {doc.get('format_version')}, this code reads {FORMAT_VERSION}"
        )
    return dict(doc)


def verify_files(directory: Path, metadata: Mapping[str, Any], names: Iterable[str]) -> None:
    """Refuse model files that are missing or differ from what training wrote."""
    recorded = metadata.get("files", {})
    for name in names:
        path = model_file(directory, name)
        if name not in recorded:
            raise ModelDirectoryError(f"{path} is not listed in {directory / METADATA}")
        if not path.is_file():
            raise ModelDirectoryError(f"{path} is missing; the model directory is incomplete")
        if sha256_file(path) != recorded[name]:
            raise ModelDirectoryError(
                f"{path} differs from the file training wrote (sha256); refusing to load it"
            )


def latest_model_dir(models_dir: str | Path) -> Path:
    """The newest model directory under ``models_dir`` (ids sort by time)."""
    dirs = sorted(p for p in Path(models_dir).iterdir() if (p / METADATA).is_file())
    if not dirs:
        raise ModelDirectoryError(f"no model directories under {models_dir}")
    return dirs[-1]


FEATURES_DIR = "features"
CNN_DIR = "cnn"


def save_feature_models(directory: Path, models: FeatureModels) -> dict[str, Any]:
    """Write the feature models under ``directory/features``; return their metadata."""
    base = directory / FEATURES_DIR
    base.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    named = {**models.classifiers, "kmeans": models.kmeans, "anomaly": models.anomaly}
    named["pca"] = models.pca
    for name, model in named.items():
        path = base / f"{name}.skops"
        save_sklearn(model, path)
        files[name] = str(path.relative_to(directory))
    bounds = base / "anomaly_bounds.npz"
    np.savez(bounds, low=models.anomaly_bounds[0], high=models.anomaly_bounds[1])
    files["anomaly_bounds"] = str(bounds.relative_to(directory))
    return {
        "feature_names": list(models.feature_names),
        "anomaly_feature_suffixes": list(models.anomaly_names),
        "classifiers": sorted(models.classifiers),
        "kmeans_k": int(models.kmeans[-1].n_clusters),
        "silhouette": {str(k): round(v, 6) for k, v in models.silhouette.items()},
        "config": models.config.to_dict(),
        "files": files,
    }


def load_feature_models(directory: Path, meta: Mapping[str, Any]) -> FeatureModels:
    """The feature models of a model directory (safe loading, sha256 checked)."""
    files = dict(meta["files"])
    paths = {name: model_file(directory, rel) for name, rel in files.items()}
    verify_files(directory, read_metadata(directory), files.values())
    loaded = {
        name: load_sklearn(paths[name]) for name, rel in files.items() if rel.endswith(".skops")
    }
    with np.load(paths["anomaly_bounds"], allow_pickle=False) as npz:
        bounds = (np.asarray(npz["low"]), np.asarray(npz["high"]))
    return FeatureModels(
        feature_names=list(meta["feature_names"]),
        anomaly_names=list(meta["anomaly_feature_suffixes"]),
        classifiers={k: loaded[k] for k in meta["classifiers"]},
        kmeans=loaded["kmeans"],
        silhouette={int(k): float(v) for k, v in meta["silhouette"].items()},
        anomaly=loaded["anomaly"],
        anomaly_bounds=bounds,
        pca=loaded["pca"],
        config=FeatureModelConfig.from_dict(meta["config"]),
    )


@dataclass
class ModelBundle:
    """Everything ``predict`` needs from a model directory."""

    directory: Path
    metadata: dict[str, Any]
    features: FeatureModels | None
    cnn: tuple[Any, Any, tuple[str, ...]] | None  # (module, CNNConfig, classes)

    @property
    def model_id(self) -> str:
        return str(self.metadata["model_id"])

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.metadata["classes"])


def load_bundle(directory: str | Path) -> ModelBundle:
    """Load a model directory: metadata, feature models and the CNN, all without pickle."""
    path = Path(directory)
    meta = read_metadata(path)
    feats = None
    if meta.get("feature_models"):
        feats = load_feature_models(path, meta["feature_models"])
    cnn = None
    if meta.get("cnn"):
        from seismoflow.models.cnn import META_FILE, WEIGHTS_FILE, load_cnn

        verify_files(path, meta, [f"{CNN_DIR}/{META_FILE}", f"{CNN_DIR}/{WEIGHTS_FILE}"])
        cnn = load_cnn(model_file(path, CNN_DIR))
    return ModelBundle(path, meta, feats, cnn)


def data_fingerprint(location: str, examples: Any, features: Any) -> str:
    """sha256 of the training data: the examples' keys and labels, their stored waveforms
    (each trace's float32 values, read as stored: NaN where no data) and the feature
    values."""
    import numpy as np
    import pandas as pd
    import zarr

    from seismoflow.storage.chunkread import read_rows
    from seismoflow.storage.location import open_root

    digest = hashlib.sha256()
    keys = examples[["group", "trace", "trace_key"]].astype(str)
    keys = keys.assign(label=examples["label"].astype(str))
    for row in keys.itertuples(index=False):
        digest.update("|".join(row).encode() + b"\n")
    digest.update(pd.util.hash_pandas_object(features, index=False).to_numpy().tobytes())
    groups = examples["group"].astype(str).to_numpy()
    traces = examples["trace"].astype("int64").to_numpy()
    traces_digest: dict[tuple[str, int], bytes] = {}
    for g in sorted(set(groups.tolist())):
        wanted = np.unique(traces[groups == g])
        wave = open_root(location, mode="r")[f"{g}/waveform"]
        assert isinstance(wave, zarr.Array)
        for start in range(0, len(wanted), 256):  # a few hundred windows in memory at once
            part = wanted[start : start + 256]
            values = read_rows(wave, part)
            for t, trace in zip(part.tolist(), values, strict=True):
                raw = np.ascontiguousarray(trace, dtype="<f4").tobytes()
                traces_digest[(g, t)] = hashlib.sha256(raw).digest()
    for g, t in zip(groups.tolist(), traces.tolist(), strict=True):
        digest.update(traces_digest[(g, t)])
    return digest.hexdigest()
