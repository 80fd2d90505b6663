"""The Python API: what a notebook calls, and what the ``seismoflow`` command calls.

Each function checks its inputs (raising :mod:`seismoflow.errors` that name the input and
what to do), runs the Prefect flow of the step, and returns the flow's summary as a dict::

    import seismoflow

    seismoflow.ingest("archive/sds", "archive.zarr", stations="archive/stations.xml.gz",
                      events="archive/events.xml")
    seismoflow.features("archive.zarr")
    model = seismoflow.train("archive.zarr", "models")["model_dir"]
    seismoflow.predict("archive.zarr", model)
    store = seismoflow.open_store("archive.zarr")

``settings`` takes a :class:`~seismoflow.settings.Settings` (or ``None``: the environment,
``seismoflow.toml`` and the defaults); keyword arguments override it. Without a Prefect
server (``PREFECT_API_URL``) the flows run in Prefect's embedded mode.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from obspy import UTCDateTime

from seismoflow.errors import BadInputError, ModelError, require_ml
from seismoflow.settings import Settings, load_settings
from seismoflow.times import parse_ns

if TYPE_CHECKING:
    from seismoflow.store import Store

TimeLike: TypeAlias = str | dt.datetime | UTCDateTime

__all__ = ["features", "fetch", "ingest", "open_store", "predict", "train"]


def _settings(settings: Settings | None, **overrides: Any) -> Settings:
    """``settings`` (or those of the environment and ``seismoflow.toml``) with ``overrides``
    that are not None."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        if settings is None:
            return load_settings(None, **given)
        return type(settings)(**{**settings.model_dump(), **given})
    except ValueError as exc:  # pydantic's ValidationError: a setting out of range
        raise BadInputError(f"settings: {exc}") from exc


def _time(value: TimeLike | None, name: str) -> int | None:
    return None if value is None else parse_ns(value, name)


def _existing(path: str | Path | None, name: str) -> str | None:
    if path is None:
        return None
    if not Path(path).exists():
        raise BadInputError(f"{name} {path} does not exist; check the path")
    return str(path)


def ingest(
    sds: str | Path,
    store: str | None = None,
    *,
    stations: str | Path | None = None,
    events: str | Path | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    workers: int | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Ingest a local archive (SDS tree or folder of miniSEED/SAC) with its StationXML and
    QuakeML into ``store`` (the ``ingest-archive`` flow); returns the run summary (counts of
    files, channel-days, samples, quarantined input, event windows; seconds per stage)."""
    from seismoflow.flows.ingest import run_ingest

    s = _settings(settings, store=store, max_workers=workers)
    source = _existing(sds, "sds")
    assert source is not None
    return run_ingest(
        s,
        source,
        _existing(stations, "stations"),
        _existing(events, "events"),
        _time(start, "start"),
        _time(end, "end"),
    )


def fetch(
    start: TimeLike,
    end: TimeLike,
    store: str | None = None,
    *,
    providers: list[str] | None = None,
    region: dict[str, float] | None = None,
    minmagnitude: float | None = None,
    event_types: tuple[str, ...] = (),
    network: str | None = None,
    station: str | None = None,
    continuous: bool = False,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Fetch events, stations and waveforms from FDSN web services into ``store`` (the
    ``fetch-fdsn`` flow). ``providers``: base URLs or ObsPy short names; ``region``: a box
    (``minlatitude``...) or a circle (``latitude``, ``longitude``, ``maxradius``)."""
    from seismoflow.fdsn.run import Selection
    from seismoflow.flows.fetch import run_fetch

    s = _settings(settings, store=store, fdsn_url=providers or None)
    t0, t1 = _time(start, "start"), _time(end, "end")
    assert t0 is not None and t1 is not None
    selection = Selection(
        t0, t1, dict(region or {}), minmagnitude, tuple(event_types), network, station, continuous
    )
    return run_fetch(s, selection)


def features(
    store: str | None = None,
    *,
    dask_address: str | None = None,
    workers: int | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Draw screened noise windows and compute the physics features of every window of
    ``store`` (the ``extract-features`` flow; on the Dask scheduler at ``dask_address`` if
    given)."""
    from seismoflow.flows.features import run_features

    s = _settings(settings, store=store, max_workers=workers)
    for path in s.noise_label_lists:
        _existing(path, "noise label list")
    from seismoflow.storage.location import require_store

    require_store(s.store, "run `seismoflow ingest` or `seismoflow fetch` first")
    return run_features(s, dask_address)


def train(
    store: str | None = None,
    models_dir: str | Path = "models",
    *,
    epochs: int | None = None,
    cnn: bool = True,
    tsne: bool = True,
    trees: int = 300,
    clusters: int | None = None,
    seed: int = 0,
    folds: int = 5,
    cv_seeds: tuple[int, ...] = (0, 1, 2),
    cnn_cv: bool = False,
    device: str | None = None,
    workers: int | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Choose the model by cross-validation grouped by source site (``folds`` folds for each
    of ``cv_seeds``; the CNN takes part with ``cnn_cv``), refit the CNN and the feature
    models on ``store`` (which must hold features) and write a new model directory under
    ``models_dir`` (the ``train-models`` flow); the summary holds ``model_dir``, the chosen
    ``primary`` classifier and every candidate's CV metrics (``cv``)."""
    require_ml("training")
    from seismoflow.flows.train import run_train
    from seismoflow.models.training import TrainOptions

    s = _settings(settings, store=store, max_workers=workers)
    from seismoflow.storage.location import require_store

    require_store(s.store, "run `seismoflow ingest` and `seismoflow features` first")
    options = TrainOptions(
        seed=seed, cnn=cnn, epochs=epochs, device=device, n_estimators=trees,
        kmeans_k=clusters, tsne=tsne, folds=folds, cv_seeds=tuple(cv_seeds), cnn_cv=cnn_cv,
    )  # fmt: skip
    return run_train(s, str(models_dir), options)


def predict(
    store: str | None = None,
    model: str | Path | None = None,
    *,
    tsne: bool = True,
    device: str | None = None,
    workers: int | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Classify, cluster and score every window of ``store`` with the model directory
    ``model`` and write the results back as a new prediction version (the ``predict``
    flow)."""
    require_ml("prediction")
    from seismoflow.models.registry import METADATA

    s = _settings(settings, store=store, max_workers=workers)
    if model is None or not (Path(model) / METADATA).is_file():
        raise ModelError(
            f"{model} is not a model directory (no {METADATA}); pass a directory that "
            "`seismoflow train --models-dir DIR` wrote under DIR"
        )
    from seismoflow.storage.location import require_store

    require_store(s.store, "check the store location")
    from seismoflow.flows.predict import run_predict

    return run_predict(s, str(model), tsne=tsne, device=device)


def open_store(location: str | Path) -> Store:
    """The store at ``location`` (a path or fsspec URL), for reading: see
    :class:`seismoflow.store.Store`."""
    from seismoflow.store import Store

    return Store.open(str(location))
