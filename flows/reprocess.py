"""``catalog-reprocess``: fetch (or ingest) -> convert -> features -> train -> predict ->
write back -> report, as one flow with one validated parameter model.

Each stage is an existing flow run as a subflow (``fetch-fdsn`` / ``ingest-archive``,
``extract-features``, ``train-models``, ``predict``); this module only decides which stages
a run needs and reports what they did. Incremental runs (e.g. ``last_days=1`` every night):

- fetch and ingest keep ledgers (``fetch_requests``, ``channel_days``): only lines and
  station-days not yet stored are requested and written; the rest of the store is untouched;
- features are recomputed over all windows (same values for old windows) only when the
  acquisition wrote new data or features are missing; otherwise the stage is skipped;
- predictions are written as a new version (old versions stay as they were) only when new
  data arrived, a model was (re)trained, or the latest version came from another model.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from seismoflow import monitoring as mon
from seismoflow.errors import ModelError, StoreError, require_ml
from seismoflow.settings import Settings, load_settings

Step = Literal["fetch", "features", "train", "predict", "export"]
DEFAULT_STEPS: tuple[Step, ...] = ("fetch", "features", "predict", "export")
REGION_KEYS = frozenset(
    {"minlatitude", "maxlatitude", "minlongitude", "maxlongitude", "latitude", "longitude",
     "maxradius"}
)  # fmt: skip


class ArchiveSource(BaseModel):
    """A local archive to ingest instead of fetching (paths as ``seismoflow ingest`` takes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sds: str
    stations: str | None = None
    events: str | None = None


class ReprocessParams(BaseModel):
    """Everything one ``catalog-reprocess`` run does. Times are UTC."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: str = Field(default="seismoflow.zarr", description="store path or fsspec URL")
    start: dt.datetime | None = Field(default=None, description="start of the time range (UTC)")
    end: dt.datetime | None = Field(default=None, description="end of the time range (UTC)")
    last_days: float | None = Field(
        default=None,
        gt=0,
        description="instead of start/end: the days before the run's start (nightly)",
    )
    region: dict[str, float] = Field(default_factory=dict, description="fdsnws-event region")
    providers: list[str] = Field(
        default_factory=list, description="FDSN base URLs or ObsPy names (default: settings)"
    )
    minmagnitude: float | None = None
    event_types: list[str] = Field(default_factory=list)
    network: str | None = None
    station: str | None = None
    continuous: bool = Field(default=False, description="station-days instead of event windows")
    archive: ArchiveSource | None = Field(default=None, description="ingest this archive, not FDSN")
    models_dir: str = Field(default="models", description="folder of model directories")
    model: str | None = Field(
        default=None, description="model directory (default: newest in models_dir)"
    )
    steps: list[Step] = Field(default_factory=lambda: list(DEFAULT_STEPS))
    train_options: dict[str, Any] = Field(
        default_factory=dict, description="TrainOptions fields (epochs, cnn, n_estimators, ...)"
    )
    tsne: bool = Field(default=True, description="t-SNE coordinates in predictions")
    device: str | None = Field(
        default=None, description="torch device (default: CUDA when present)"
    )
    export: str | None = Field(
        default=None, description="CSV of event predictions (default: by store)"
    )
    settings: dict[str, Any] = Field(
        default_factory=dict, description="other Settings fields (max_workers, codec, ...)"
    )

    @field_validator("region")
    @classmethod
    def _region_keys(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = set(v) - REGION_KEYS
        if unknown:
            raise ValueError(f"unknown region keys {sorted(unknown)}; use {sorted(REGION_KEYS)}")
        return v

    @field_validator("train_options")
    @classmethod
    def _train_options(cls, v: dict[str, Any]) -> dict[str, Any]:
        from seismoflow.models.training import TrainOptions

        try:
            TrainOptions.from_dict(v)
        except TypeError as exc:
            raise ValueError(f"train_options: {exc}") from exc
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ReprocessParams:
        if self.last_days is not None and (self.start or self.end):
            raise ValueError("give either last_days or start/end, not both")
        if self.start and self.end and self.start >= self.end:
            raise ValueError(f"start {self.start} is not before end {self.end}")
        no_range = self.last_days is None and (self.start is None or self.end is None)
        if "fetch" in self.steps and self.archive is None and no_range:
            raise ValueError("fetching needs start and end (or last_days), or an archive")
        if "store" in self.settings:
            raise ValueError("give the store as `store`, not in settings")
        self.to_settings()
        return self

    def time_range_ns(self, now: dt.datetime | None = None) -> tuple[int | None, int | None]:
        """The run's time range in ns since the epoch (``last_days`` counts back from now)."""
        if self.last_days is not None:
            end = now or dt.datetime.now(dt.UTC)
            return _ns(end - dt.timedelta(days=self.last_days)), _ns(end)
        return (
            _ns(self.start) if self.start else None,
            _ns(self.end) if self.end else None,
        )

    def to_settings(self) -> Settings:
        overrides: dict[str, Any] = {**self.settings, "store": self.store}
        if self.providers:
            overrides["fdsn_url"] = list(self.providers)
        return load_settings(None, **overrides)

    def selection_dict(self, start_ns: int, end_ns: int) -> dict[str, Any]:
        """The ``fetch-fdsn`` flow's ``selection`` parameter (validated by ``Selection``)."""
        from seismoflow.fdsn.run import Selection

        sel = Selection(
            start_ns, end_ns, dict(self.region), self.minmagnitude, tuple(self.event_types),
            self.network, self.station, self.continuous,
        )  # fmt: skip
        return {
            "start_ns": sel.start_ns, "end_ns": sel.end_ns, "region": dict(sel.region),
            "minmagnitude": sel.minmagnitude, "event_types": list(sel.event_types),
            "network": sel.network, "station": sel.station, "continuous": sel.continuous,
        }  # fmt: skip

    def export_path(self) -> str:
        if self.export:
            return self.export
        from seismoflow.storage.location import is_local, local_path

        if not is_local(self.store):
            raise ValueError(f"store {self.store} is remote: give `export` (a local CSV path)")
        store = local_path(self.store)
        return str(store.parent / f"{store.stem}-predictions.csv")


def _ns(t: dt.datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1_000


# --- decisions (plain functions) -----------------------------------------------------------


def new_data_written(acquired: dict[str, Any]) -> bool:
    """Whether a fetch or ingest summary wrote any new channel-day or event window."""
    ingest = acquired.get("ingest", acquired)
    if not ingest:
        return False
    return bool(ingest.get("units_written", 0) or ingest.get("windows", {}).get("written", 0))


def acquisition_counts(acquired: dict[str, Any]) -> dict[str, int]:
    """Fetched / converted / quarantined counts of a fetch or ingest summary."""
    ingest = acquired.get("ingest", acquired) or {}
    fetched = acquired["traces"] if "ingest" in acquired else ingest.get("files", 0)
    return {
        "events": int(acquired.get("events", ingest.get("events", 0)) or 0),
        "fetched": int(fetched or 0),
        "converted_channel_days": int(ingest.get("units_written", 0) or 0),
        "converted_windows": int(ingest.get("windows", {}).get("written", 0) or 0),
        "skipped_already_stored": int(ingest.get("units_skipped", 0) or 0)
        + int(acquired.get("lines_skipped_done", 0) or 0),
        "quarantined": int(ingest.get("quarantined", 0) or 0),
    }


def find_model(models_dir: str, model: str | None) -> Path | None:
    """The model directory to use: ``model`` if given, else the newest under ``models_dir``."""
    from seismoflow.models.registry import METADATA, ModelDirectoryError, latest_model_dir

    if model:
        path = Path(model)
        if not (path / METADATA).is_file():
            raise ModelError(f"{model} is not a model directory (no {METADATA}); check `model`")
        return path
    if not Path(models_dir).is_dir():
        return None
    try:
        return latest_model_dir(models_dir)
    except ModelDirectoryError:
        return None


def latest_prediction_model(location: str) -> str | None:
    """``model_id`` of the store's latest prediction version, None without predictions."""
    from seismoflow.storage.location import open_root
    from seismoflow.storage.predictions import latest_version, prediction_path

    try:
        version = latest_version(location)
    except StoreError:  # no predictions yet
        return None
    model_id = open_root(location, mode="r")[prediction_path(version)].attrs.get("model_id")
    return str(model_id) if model_id else None


# --- the flow -----------------------------------------------------------------------------


@flow(name="catalog-reprocess", log_prints=True)
def catalog_reprocess(params: ReprocessParams) -> dict[str, Any]:
    """Bring the store up to date for ``params`` and refresh predictions; returns a summary."""
    # The one flow that chains flows (as subflows, each with the run's task runner).
    from seismoflow.flows.features import extract_features
    from seismoflow.flows.fetch import fetch_fdsn
    from seismoflow.flows.ingest import ingest_archive
    from seismoflow.flows.predict import predict
    from seismoflow.flows.train import train_models
    from seismoflow.storage.location import store_exists

    from seismoflow.featurize.extract import features_missing

    logger = get_run_logger()
    s = params.to_settings()
    settings = s.model_dump()
    progress = mon.ProgressArtifact(
        "reprocess-progress", len(params.steps) + 1, "stages of a catalogue reprocessing run"
    )
    clock = mon.StageClock(on_stage=lambda _: progress.advance())
    notes: list[str] = []
    out: dict[str, Any] = {"store": s.store, "steps": {}}
    start_ns, end_ns = params.time_range_ns()

    acquired: dict[str, Any] = {}
    new_data = False
    if "fetch" in params.steps:
        if params.archive is not None:
            with clock.stage("ingest"):
                acquired = ingest_archive(
                    sds=params.archive.sds, stations=params.archive.stations,
                    events=params.archive.events, start_ns=start_ns, end_ns=end_ns,
                    settings=settings,
                )  # fmt: skip
        else:
            assert start_ns is not None and end_ns is not None
            with clock.stage("fetch"):
                acquired = fetch_fdsn(
                    selection=params.selection_dict(start_ns, end_ns), settings=settings
                )
        new_data = new_data_written(acquired)
        out["steps"]["fetch"] = "ingested archive" if params.archive else "fetched"
        if not new_data:
            notes.append("acquisition wrote nothing new: the store already held this range")

    if not store_exists(s.store):
        raise StoreError(
            f"no seismoflow store at {s.store}: run with the fetch step (a time range or an "
            "archive) first, or check `store`"
        )
    missing = features_missing(s.store)
    # Reading, fetching and ingesting run without the ml extra; models need it.
    wants_model = "train" in params.steps or "predict" in params.steps
    if wants_model:
        require_ml("the train and predict steps")
    model = find_model(params.models_dir, params.model) if wants_model else None
    will_train = "train" in params.steps or (model is None and "predict" in params.steps)
    # Training and prediction read features: a store without them gets them first, whether
    # or not the features step was asked for (train and predict refuse a store without).
    needed = bool(missing) and (will_train or "predict" in params.steps)
    if ("features" in params.steps and (new_data or missing)) or needed:
        with clock.stage("features"):
            out["features"] = extract_features(
                settings=settings
            )
        out["steps"]["features"] = (
            "recomputed over all windows" if "features" in params.steps
            else f"computed: the store had no {', '.join(missing)} features"
        )  # fmt: skip
        notes.append("features were recomputed over all windows (old windows: same values)")
    elif "features" in params.steps:
        out["steps"]["features"] = "skipped: no new windows and features present"

    trained = False
    if will_train:
        reason = "asked" if "train" in params.steps else f"no model under {params.models_dir}"
        with clock.stage("train"):
            out["train"] = train_models(
                store=s.store, models_dir=params.models_dir,
                options=params.train_options, settings=settings,
            )  # fmt: skip
        model = Path(out["train"]["model_dir"])
        trained = True
        out["steps"]["train"] = f"trained ({reason})"
    out["model_dir"] = str(model) if model else None
    if model is not None:
        from seismoflow.models.registry import read_metadata
    out["model_metrics"] = read_metadata(model).get("headline", {}) if model else {}

    images: dict[str, Path] = {}
    if model is not None:
        images.update({f"model: {p.stem}": p for p in sorted(model.glob("*.png"))})
        if not images:
            images.update({f"model: {p.stem}": p for p in sorted(model.rglob("*.png"))[:8]})

    if "predict" in params.steps and model is not None:
        model_id = str(read_metadata(model).get("model_id", model.name))
        previous = latest_prediction_model(s.store)
        if new_data or trained or previous != model_id:
            with clock.stage("predict"):
                out["predict"] = predict(
                    store=s.store, model=str(model), tsne=params.tsne,
                    device=params.device, settings=settings,
                )  # fmt: skip
            out["steps"]["predict"] = f"new prediction version {out['predict']['version']}"
        else:
            out["steps"]["predict"] = f"skipped: latest version already from {model_id}"
            notes.append("predictions unchanged: no new data and the same model")

    if "export" in params.steps:
        with clock.stage("export"):
            out["export"] = export_predictions(s.store, params.export_path())
        out["steps"]["export"] = f"{out['export']['events']} events to {out['export']['path']}"

    with clock.stage("report"):
        report_dir = Path(tempfile.mkdtemp(prefix="seismoflow-report-"))
        plot = mon.availability_png(s.store, report_dir / "availability.png")
        if plot:
            images = {"data availability": plot, **images}
        if out.get("export"):
            plot = mon.events_map_png(out["export"]["map"], report_dir / "events.png")
            if plot:
                images = {"events by predicted class": plot, **images}
            out["export"].pop("map")
    out["acquired"] = acquisition_counts(acquired) if acquired else {}
    out["counts"] = {
        **out["acquired"],
        "predicted_windows": out.get("predict", {}).get("n_traces", 0),
        "predicted_events": out.get("predict", {}).get("n_events", 0),
    }
    out["seconds"] = clock.rounded()
    out["flow_run_id"] = str(flow_run.id) if flow_run.id else None
    publish_report(out, notes, images)
    progress.finish()
    # One line per stage; the model metrics and tables are in the run's artifacts.
    stage_of = {"fetch": "ingest" if params.archive else "fetch"}
    for step, what in out["steps"].items():
        logger.info("%s: %s (%.1f s)", step, what, out["seconds"].get(stage_of.get(step, step), 0))
    logger.info(
        "counts: %s; %.1f s in all",
        ", ".join(f"{k} {v}" for k, v in out["counts"].items()), sum(out["seconds"].values()),
    )
    return out


def export_predictions(location: str, path: str) -> dict[str, Any]:
    """Write the latest prediction version as an event CSV; counts and a frame for the map."""
    from seismoflow.storage.tables import read_table

    from seismoflow.models.predict import export_table

    table = export_table(location)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    catalog = read_table(location, "catalog")[["event_id", "latitude", "longitude"]]
    located = table.merge(catalog.astype({"event_id": str}), on="event_id", how="inner")
    return {
        "path": path,
        "events": len(table),
        "by_class": {str(k): int(v) for k, v in table["predicted_class"].value_counts().items()},
        "map": located,
    }


def publish_report(out: dict[str, Any], notes: list[str], images: dict[str, Path]) -> None:
    """The run page: a summary, stage and class tables, quarantine, coverage, plots."""
    steps = [f"**{k}**: {v}" for k, v in out["steps"].items()]
    mon.publish_markdown(
        "reprocess-summary",
        mon.summary_markdown(f"Catalogue reprocessing of `{out['store']}`", out["counts"],
                             out["seconds"], steps + notes),
        "counts and seconds per stage of a catalogue reprocessing run",
    )  # fmt: skip
    mon.publish_table(
        "reprocess-stages",
        [{"stage": k, "seconds": v} for k, v in out["seconds"].items()],
        "seconds per stage",
    )
    by_class = out.get("export", {}).get("by_class", {})
    mon.publish_table(
        "reprocess-predicted-classes",
        [{"class": k, "events": v} for k, v in sorted(by_class.items())],
        "events per predicted class (latest prediction version)",
    )
    mon.publish_table(
        "reprocess-per-class-metrics",
        per_class_rows(out.get("model_metrics") or {}),
        "per-class metrics of the model on its held-out test events",
    )
    mon.publish_table(
        "reprocess-quarantine", mon.quarantine_rows(out["store"]), "quarantine reasons"
    )
    mon.publish_table("reprocess-coverage", mon.coverage_rows(out["store"]), "per-station coverage")
    mon.publish_images("reprocess-plots", "Plots", images, "availability, events, model plots")


def per_class_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Event-level per-class F1 of each candidate in the site-grouped CV (a model
    directory's ``headline``): mean over fold seeds and its 95% bootstrap interval."""
    rows = []
    for model, block in sorted(metrics.items()):
        for name, m in (block.get("event_f1") or {}).items():
            rows.append({"model": model, "class": name, "f1": m.get("mean"),
                         "f1_low": m.get("low"), "f1_high": m.get("high")})  # fmt: skip
    return rows


def run_reprocess(params: ReprocessParams) -> dict[str, Any]:
    """Run the flow in this process (the CLI's entry point)."""
    return catalog_reprocess(params=params)
