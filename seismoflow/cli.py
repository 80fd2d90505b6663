"""The ``seismoflow`` command line. Pipeline work runs as Prefect flows through the Python
API (:mod:`seismoflow.api`); ``info`` and ``export`` read the store directly.

Errors a user can fix (:mod:`seismoflow.errors`) print one line naming the input and what
to do, and exit with the code of their class; ``--debug`` shows the traceback."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from obspy import UTCDateTime
from rich.console import Console
from rich.table import Table

from seismoflow import api
from seismoflow.errors import (
    EXIT_BUG,
    EXIT_CODES,
    EXIT_INTERRUPTED,
    BadInputError,
    SeismoflowError,
    StoreError,
)
from seismoflow.settings import Settings, load_settings
from seismoflow.times import from_ns, parse_ns

EXIT_HELP = (
    "Exit codes: 0 done; 1 a bug in seismoflow (please report it, with --debug's traceback); "
    + "; ".join(f"{code} {name}" for name, code in EXIT_CODES.items())
    + f"; {EXIT_INTERRUPTED} interrupted. Usage errors also exit with 2."
)
DEBUG_ENV = "SEISMOFLOW_DEBUG"

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Seismic data from FDSN services and archives into a Zarr store.",
    epilog=EXIT_HELP,
)
export_app = typer.Typer(no_args_is_help=True, help="Export data from a store.")
app.add_typer(export_app, name="export")
labels_app = typer.Typer(no_args_is_help=True, help="Analyst labels kept in a store.")
app.add_typer(labels_app, name="labels")
console = Console(stderr=True)



ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML settings file")]
StoreOpt = Annotated[str | None, typer.Option("--store", help="store path or fsspec URL")]
WorkersOpt = Annotated[int | None, typer.Option("--workers", help="parallel tasks")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the summary as JSON")]
# The selection options that ``fetch`` and ``run`` share.
FdsnUrlOpt = Annotated[
    list[str] | None,
    typer.Option("--fdsn-url", help="FDSN base URL or ObsPy short name (repeatable)"),
]
MinLatOpt = Annotated[float | None, typer.Option("--minlatitude")]
MaxLatOpt = Annotated[float | None, typer.Option("--maxlatitude")]
MinLonOpt = Annotated[float | None, typer.Option("--minlongitude")]
MaxLonOpt = Annotated[float | None, typer.Option("--maxlongitude")]
LatOpt = Annotated[float | None, typer.Option("--latitude")]
LonOpt = Annotated[float | None, typer.Option("--longitude")]
RadiusOpt = Annotated[float | None, typer.Option("--maxradius", help="degrees")]
MinMagOpt = Annotated[float | None, typer.Option("--minmagnitude")]
EventTypeOpt = Annotated[
    list[str] | None, typer.Option("--event-type", help="QuakeML event type (repeatable)")
]
NetworkOpt = Annotated[str | None, typer.Option("--network", help="e.g. UW,CC")]
StationOpt = Annotated[str | None, typer.Option("--station")]
ChannelPriorityOpt = Annotated[
    str | None, typer.Option("--channel-priority", help='e.g. "HH?,BH?,EH?"')
]
MaxDistanceOpt = Annotated[
    float | None, typer.Option("--max-distance", help="station distance, degrees")
]
ContinuousOpt = Annotated[
    bool, typer.Option("--continuous", help="station-days instead of event windows")
]
CacheOpt = Annotated[str | None, typer.Option("--cache", help="local folder for fetched miniSEED")]


# Commands that run Prefect flows (their console logs go through Prefect's handlers).
FLOW_COMMANDS = frozenset(
    {"ingest", "archive-batch", "fetch", "features", "train", "predict", "run"}
)


@app.callback()
def _options(
    ctx: typer.Context,
    debug: Annotated[
        bool, typer.Option("--debug", help=f"show tracebacks (or set {DEBUG_ENV}=1)")
    ] = False,
) -> None:
    """Seismic data from FDSN services and archives into a Zarr store."""
    # Before anything starts a process (Prefect's temporary server, a Dask cluster): what
    # the command starts ends with it, even after kill -9 (see seismoflow.reaper).
    from seismoflow import reaper

    reaper.start()
    if debug:
        os.environ[DEBUG_ENV] = "1"
    elif ctx.invoked_subcommand in FLOW_COMMANDS:
        _quiet_user_errors()


class _NoUserErrorTraceback(logging.Filter):
    """A failed run's console log shows a user's error as its line, without the traceback;
    the run's log on the Prefect server keeps it (its handler runs before this one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], SeismoflowError):
            record.exc_info = None
            record.exc_text = None
        return True


def _quiet_user_errors() -> None:
    from prefect import flow  # noqa: F401 - Prefect sets up its console handler on import

    for handler in logging.getLogger().handlers:
        handler.addFilter(_NoUserErrorTraceback())


def main() -> None:
    """The ``seismoflow`` command: one line and the class's exit code for what the user can
    fix, a traceback only with ``--debug``."""
    try:
        app()
    except SeismoflowError as exc:
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        console.print("interrupted; a re-run resumes where this one stopped")
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - anything else is a bug: say so in one line
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        console.print(
            f"[red]internal error:[/red] {type(exc).__name__}: {exc} (a bug in seismoflow: "
            "run again with --debug for the traceback and report it)",
            soft_wrap=True,
            highlight=False,
        )
        sys.exit(EXIT_BUG)


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **overrides)
    except SeismoflowError:
        raise
    except ValueError as exc:  # pydantic's ValidationError: a setting out of range
        raise BadInputError(f"settings: {exc}") from exc


def _fetch_settings(
    config: Path | None,
    store: str | None,
    fdsn_url: list[str] | None,
    channel_priority: str | None,
    max_distance: float | None,
    cache: str | None,
    workers: int | None,
) -> Settings:
    """Settings for the commands that fetch (``fetch``, ``run``)."""
    return _settings(
        config,
        store=store,
        fdsn_url=fdsn_url or None,
        channel_priority=(
            [p.strip() for p in channel_priority.split(",") if p.strip()]
            if channel_priority
            else None
        ),
        max_distance_deg=max_distance,
        fetch_cache=cache,
        max_workers=workers,
    )


def _region(**bounds: float | None) -> dict[str, float]:
    """The box or circle options that were given."""
    return {k: v for k, v in bounds.items() if v is not None}


def _time(value: str | None, option: str) -> int | None:
    return None if value is None else parse_ns(value, option)


def _when(value: str | None, option: str) -> UTCDateTime | None:
    """``value`` checked as a time (the error names the option), for the Python API."""
    ns = _time(value, option)
    return None if ns is None else from_ns(ns)


def _check_paths(*given: tuple[Path | None, str]) -> None:
    for path, option in given:
        if path is not None and not path.exists():
            raise BadInputError(f"{option} {path} does not exist; check the path")


@app.command()
def ingest(
    sds: Annotated[Path, typer.Option("--sds", help="SDS archive or folder of miniSEED/SAC")],
    stations: Annotated[Path | None, typer.Option("--stations", help="StationXML")] = None,
    events: Annotated[Path | None, typer.Option("--events", help="QuakeML catalogue")] = None,
    start: Annotated[str | None, typer.Option("--start", help="ISO start time")] = None,
    end: Annotated[str | None, typer.Option("--end", help="ISO end time")] = None,
    store: StoreOpt = None,
    codec: Annotated[str | None, typer.Option(help="pcodec or delta-zstd")] = None,
    window_rate: Annotated[float | None, typer.Option(help="event-window Hz")] = None,
    pre: Annotated[float | None, typer.Option(help="seconds before reference")] = None,
    post: Annotated[float | None, typer.Option(help="seconds after reference")] = None,
    reference: Annotated[str | None, typer.Option(help="'origin' or 'p'")] = None,
    workers: WorkersOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ingest a local archive into the store (runs the ``ingest-archive`` flow)."""
    settings = _settings(
        config,
        store=store,
        codec=codec,
        window_sampling_rate=window_rate,
        window_pre_s=pre,
        window_post_s=post,
        window_reference=reference,
        max_workers=workers,
    )
    _check_paths((sds, "--sds"), (stations, "--stations"), (events, "--events"))
    summary = api.ingest(
        sds,
        stations=stations,
        events=events,
        start=_when(start, "--start"),
        end=_when(end, "--end"),
        settings=settings,
    )
    if as_json:
        typer.echo(json.dumps(summary, indent=2, sort_keys=True))
    else:
        _print_info(_info(settings.store))
        _print_skipped(summary)


def _print_skipped(summary: dict[str, Any]) -> None:
    """Name the input files a run skipped (hidden ones are counted, never ingested)."""
    if summary.get("skipped_hidden"):
        console.print(
            f"skipped {summary['skipped_hidden']} hidden file(s) (name starts with '.'), "
            f"e.g. {', '.join(summary.get('skipped_hidden_first', []))}; rename them to "
            "ingest them"
        )


@app.command("archive-batch")
def archive_batch(
    sds: Annotated[Path, typer.Option("--sds", help="SDS archive or folder of miniSEED/SAC")],
    stations: Annotated[Path | None, typer.Option("--stations", help="StationXML")] = None,
    events: Annotated[Path | None, typer.Option("--events", help="QuakeML catalogue")] = None,
    start: Annotated[str | None, typer.Option("--start", help="ISO start time")] = None,
    end: Annotated[str | None, typer.Option("--end", help="ISO end time")] = None,
    store: StoreOpt = None,
    dask_address: Annotated[
        str | None,
        typer.Option("--dask-address", help="Dask scheduler, e.g. tcp://host:8786 (default: "
                     "a LocalCluster)"),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="LocalCluster worker processes (ignored with an address)")
    ] = None,
    station_days: Annotated[
        int | None, typer.Option("--station-days", help="at most this many station-days per task")
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ingest a large archive on a Dask cluster (runs the ``archive-batch`` flow); the store
    is the same as ``seismoflow ingest`` writes."""
    settings = _settings(
        config,
        store=store,
        dask_address=dask_address,
        dask_workers=workers,
        archive_station_days=station_days,
    )
    _check_paths((sds, "--sds"), (stations, "--stations"), (events, "--events"))
    from seismoflow.flows.archive_batch import run_archive_batch

    summary = run_archive_batch(
        settings,
        str(sds),
        str(stations) if stations else None,
        str(events) if events else None,
        _time(start, "--start"),
        _time(end, "--end"),
    )
    if as_json:
        typer.echo(json.dumps(summary, indent=2, sort_keys=True, default=str))
    else:
        _print_info(_info(settings.store))
        _print_skipped(summary)


@app.command()
def fetch(
    start: Annotated[str, typer.Option("--start", help="ISO start time")],
    end: Annotated[str, typer.Option("--end", help="ISO end time")],
    fdsn_url: FdsnUrlOpt = None,
    minlatitude: MinLatOpt = None,
    maxlatitude: MaxLatOpt = None,
    minlongitude: MinLonOpt = None,
    maxlongitude: MaxLonOpt = None,
    latitude: LatOpt = None,
    longitude: LonOpt = None,
    maxradius: RadiusOpt = None,
    minmagnitude: MinMagOpt = None,
    event_type: EventTypeOpt = None,
    network: NetworkOpt = None,
    station: StationOpt = None,
    channel_priority: ChannelPriorityOpt = None,
    max_distance: MaxDistanceOpt = None,
    continuous: ContinuousOpt = False,
    cache: CacheOpt = None,
    store: StoreOpt = None,
    workers: WorkersOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fetch events, stations and waveforms from FDSN services (the ``fetch-fdsn`` flow).

    Restricted data: set SEISMOFLOW_FDSN_USER and SEISMOFLOW_FDSN_PASSWORD, or the settings
    fdsn_token_file / fdsn_secret_block; credentials are never taken on the command line.
    """
    settings = _fetch_settings(
        config, store, fdsn_url, channel_priority, max_distance, cache, workers
    )
    region = _region(
        minlatitude=minlatitude, maxlatitude=maxlatitude,
        minlongitude=minlongitude, maxlongitude=maxlongitude,
        latitude=latitude, longitude=longitude, maxradius=maxradius,
    )  # fmt: skip
    summary = api.fetch(
        _when(start, "--start"),
        _when(end, "--end"),
        region=region,
        minmagnitude=minmagnitude,
        event_types=tuple(event_type or ()),
        network=network,
        station=station,
        continuous=continuous,
        settings=settings,
    )
    if as_json:
        typer.echo(json.dumps(summary, indent=2, sort_keys=True, default=str))
    else:
        _print_info(_info(settings.store))


def _info(store: str) -> dict[str, Any]:
    from seismoflow.inspect import store_info

    return store_info(store)


def _print_info(info: dict[str, Any]) -> None:
    table = Table(title=f"seismoflow store {info['store']}")
    table.add_column("what")
    table.add_column("value", justify="right")
    for key, value in info.items():
        if key != "store":
            shown = (
                ", ".join(f"{k}: {v}" for k, v in value.items())
                if isinstance(value, dict)
                else str(value)
            )
            table.add_row(key, shown)
    Console().print(table)


_STATE_WORDS = {
    "partial": "a partial seismoflow store (its structure was never created)",
    "unfinished": "a seismoflow store that was never finalized",
}


@app.command()
def info(
    store: StoreOpt = None,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Summarise a store: events, stations, channels, traces, samples, quarantine."""
    settings = _settings(config, store=store)
    from seismoflow.storage.location import MISSING, PARTIAL, UNFINISHED, store_state

    state = store_state(settings.store)
    if state == MISSING:
        raise StoreError(
            f"no seismoflow store at {settings.store}; run `seismoflow ingest` first or check "
            "--store"
        )
    if state in (PARTIAL, UNFINISHED):
        # stderr, so --json output stays one JSON document
        console.print(
            f"[yellow]{settings.store} is {_STATE_WORDS[state]}[/yellow]: a fetch or ingest "
            "is still running, or was stopped before it finished. If none is running, run "
            "the same `seismoflow fetch` / `seismoflow ingest` command again: it resumes and "
            "finalizes the store. The counts below are what is stored so far."
        )
    summary = _info(settings.store)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, sort_keys=True))
    else:
        _print_info(summary)


@app.command()
def migrate(
    store: StoreOpt = None,
    out: Annotated[
        str | None,
        typer.Option("--out", help="write the new store here and leave the old one as is"),
    ] = None,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Rewrite a store of an older schema as the current one, every sample identical.

    Without --out the new store takes the old one's place and the old one is kept beside
    it as STORE.schema2 (delete it once satisfied); a stopped migration leaves the old
    store untouched and can be run again."""
    settings = _settings(config, store=store)
    from seismoflow.storage.migrate import migrate_store

    summary = migrate_store(settings.store, out)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, sort_keys=True, default=str))
    else:
        console.print(
            f"migrated {summary['channels']} channels, {summary['channel_days']} channel-days, "
            f"{summary['samples']} samples, windows {summary['traces']} into {summary['store']}"
            + (
                f"; the old store is kept at {summary['old_store_kept_at']}"
                if "old_store_kept_at" in summary
                else ""
            )
        )


@export_app.command("waveforms")
def export_waveforms(
    out: Annotated[Path, typer.Option("--out", help="miniSEED file to write")],
    store: StoreOpt = None,
    event: Annotated[str | None, typer.Option("--event", help="event id")] = None,
    station: Annotated[str | None, typer.Option("--station", help="NET.STA")] = None,
    start: Annotated[str | None, typer.Option("--start")] = None,
    end: Annotated[str | None, typer.Option("--end")] = None,
    config: ConfigOpt = None,
) -> None:
    """Write stored samples (native rate, raw counts) as miniSEED."""
    from seismoflow.inspect import export_event, export_station, write_mseed

    settings = _settings(config, store=store)
    if (event is None) == (station is None):
        raise BadInputError("give exactly one of --event ID or --station NET.STA")
    t0, t1 = _time(start, "--start"), _time(end, "--end")
    if station is not None and (t0 is None or t1 is None or "." not in station):
        raise BadInputError(f"--station {station} needs the form NET.STA, --start and --end")
    from seismoflow.storage.location import require_store

    require_store(settings.store, "check --store")
    if event is not None:
        stream = export_event(settings.store, event)
    else:
        assert station is not None and t0 is not None and t1 is not None
        stream = export_station(settings.store, station, t0, t1)
    write_mseed(stream, out)
    console.print(f"wrote {len(stream)} traces to {out}")


# --- features (issue 4): noise windows and physics features -------------------------------


@app.command()
def features(
    store: StoreOpt = None,
    dask_address: Annotated[
        str | None, typer.Option("--dask-address", help="dask scheduler, e.g. tcp://host:8786")
    ] = None,
    label_list: Annotated[
        list[Path] | None,
        typer.Option(
            "--noise-label-list",
            help="CSV of labelled signal windows kept out of noise (repeatable), e.g. "
            "sources/rocknet/*_meta.csv",
        ),
    ] = None,
    per_channel_set: Annotated[
        int | None, typer.Option(help="most noise windows per channel set")
    ] = None,
    workers: WorkersOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Draw screened noise windows and compute physics features of every window
    (runs the ``extract-features`` flow)."""
    settings = _settings(
        config,
        store=store,
        max_workers=workers,
        noise_per_channel_set=per_channel_set,
        noise_label_lists=[str(p) for p in label_list] if label_list else None,
    )
    summary = api.features(dask_address=dask_address, settings=settings)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, sort_keys=True))
    else:
        noise = summary["noise"]
        console.print(f"noise windows: {noise.get('written', 0)} written, {noise}")
        for group, c in summary["features"].items():
            console.print(
                f"features of {group}: {c['traces']} traces "
                f"({c['traces_with_features']} with data), {c['traces_per_s']} traces/s"
            )


# --- models (issue 4): train, predict, export predictions ---------------------------------


CvSeedsOpt = Annotated[
    str, typer.Option("--cv-seeds", help="fold seeds of the CV, comma-separated")
]


def _cv_seeds(text: str) -> tuple[int, ...]:
    """``--cv-seeds 0,1,2`` as a tuple of ints (a bad value names the option)."""
    try:
        seeds = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise BadInputError(f"--cv-seeds {text!r}: give integers, e.g. 0,1,2") from exc
    if not seeds:
        raise BadInputError("--cv-seeds needs at least one seed")
    return seeds


@app.command()
def train(
    models_dir: Annotated[Path, typer.Option("--models-dir", help="folder of model directories")],
    store: StoreOpt = None,
    epochs: Annotated[int | None, typer.Option(help="CNN epochs (default: CNNConfig)")] = None,
    cnn: Annotated[bool, typer.Option("--cnn/--no-cnn", help="train the CNN")] = True,
    tsne: Annotated[bool, typer.Option("--tsne/--no-tsne", help="t-SNE map plots")] = True,
    trees: Annotated[int, typer.Option(help="random forest / isolation forest trees")] = 300,
    clusters: Annotated[int | None, typer.Option(help="K-Means k (default: silhouette)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the models")] = 0,
    folds: Annotated[int, typer.Option(help="site-grouped CV folds")] = 5,
    cv_seeds: CvSeedsOpt = "0,1,2",
    cnn_cv: Annotated[
        bool,
        typer.Option(
            "--cnn-cv/--no-cnn-cv",
            help="cross-validate the CNN too (folds x seeds trainings); without it the CNN "
            "is trained and saved but never chosen",
        ),
    ] = False,
    device: Annotated[str | None, typer.Option(help="torch device (default: auto)")] = None,
    workers: WorkersOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Choose the classifier by cross-validation grouped by source site, refit on every
    window and write a new model directory under --models-dir (runs the ``train-models``
    flow)."""
    seeds = _cv_seeds(cv_seeds)
    settings = _settings(config, store=store, max_workers=workers)
    summary = api.train(
        models_dir=models_dir, epochs=epochs, cnn=cnn, tsne=tsne, trees=trees,
        clusters=clusters, seed=seed, folds=folds, cv_seeds=seeds, cnn_cv=cnn_cv,
        device=device, settings=settings,
    )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(summary, indent=2, sort_keys=True))
    else:
        console.print(f"model written to {summary['model_dir']} (primary: {summary['primary']})")
        for model, h in sorted(summary["cv"].items()):
            m, ex = h["event_macro_f1"], h["event_f1"]["explosion"]
            console.print(
                f"  {model}: CV event macro-F1 {m['mean']:.3f} [{m['low']:.3f}, {m['high']:.3f}], "
                f"explosion F1 {ex['mean']:.3f} [{ex['low']:.3f}, {ex['high']:.3f}]"
            )


@app.command()
def predict(
    model: Annotated[Path, typer.Option("--model", help="a model directory (from train)")],
    store: StoreOpt = None,
    tsne: Annotated[bool, typer.Option("--tsne/--no-tsne", help="t-SNE coordinates")] = True,
    device: Annotated[str | None, typer.Option(help="torch device (default: auto)")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Classify, cluster and score every window of a store with a model directory and
    write the results back as a new prediction version (runs the ``predict`` flow)."""
    settings = _settings(config, store=store)
    summary = api.predict(model=model, tsne=tsne, device=device, settings=settings)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, sort_keys=True))
    else:
        console.print(
            f"prediction version {summary['version']}: {summary['n_traces']} windows, "
            f"{summary['n_events']} events; classes {summary['event_classes']}"
        )


@export_app.command("predictions")
def export_predictions(
    out: Annotated[Path, typer.Option("--out", help="CSV file to write")],
    store: StoreOpt = None,
    per_trace: Annotated[bool, typer.Option("--per-trace", help="one row per trace")] = False,
    version: Annotated[str | None, typer.Option("--version", help="default: latest")] = None,
    config: ConfigOpt = None,
) -> None:
    """Write predictions as CSV: one row per event (or per trace, with its codes)."""
    from seismoflow.models.predict import export_table

    settings = _settings(config, store=store)
    from seismoflow.storage.location import require_store

    require_store(settings.store, "check --store")
    table = export_table(settings.store, per_trace=per_trace, version=version)
    table.to_csv(out, index=False)
    console.print(f"wrote {len(table)} rows to {out}")


@labels_app.command("import")
def labels_import(
    csv: Annotated[Path, typer.Option("--csv", help="CSV: event_id, class, analyst, time")],
    store: StoreOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Record analyst labels as a new version of the store's overrides (the catalogue is
    not touched); training uses them over the catalogue's event types."""
    from seismoflow.analyst import import_labels
    from seismoflow.storage.location import require_store

    settings = _settings(config, store=store)
    require_store(settings.store, "check --store")
    summary = import_labels(settings.store, csv)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, sort_keys=True))
    else:
        console.print(
            f"analyst labels version {summary['version']}: {summary['rows']} events "
            f"{summary['classes']}"
        )


# --- orchestration (issue 5): the whole job, deployments ----------------------------------


@app.command("run")
def run_job(
    start: Annotated[str | None, typer.Option("--start", help="ISO start time (UTC)")] = None,
    end: Annotated[str | None, typer.Option("--end", help="ISO end time (UTC)")] = None,
    last_days: Annotated[
        float | None, typer.Option("--last-days", help="instead of --start/--end: the last N days")
    ] = None,
    fdsn_url: FdsnUrlOpt = None,
    minlatitude: MinLatOpt = None,
    maxlatitude: MaxLatOpt = None,
    minlongitude: MinLonOpt = None,
    maxlongitude: MaxLonOpt = None,
    latitude: LatOpt = None,
    longitude: LonOpt = None,
    maxradius: RadiusOpt = None,
    minmagnitude: MinMagOpt = None,
    event_type: EventTypeOpt = None,
    network: NetworkOpt = None,
    station: StationOpt = None,
    continuous: ContinuousOpt = False,
    channel_priority: ChannelPriorityOpt = None,
    max_distance: MaxDistanceOpt = None,
    cache: CacheOpt = None,
    sds: Annotated[
        Path | None, typer.Option("--sds", help="ingest this archive instead of fetching")
    ] = None,
    stations: Annotated[Path | None, typer.Option("--stations", help="StationXML")] = None,
    events: Annotated[Path | None, typer.Option("--events", help="QuakeML catalogue")] = None,
    models_dir: Annotated[
        Path, typer.Option("--models-dir", help="folder of model directories")
    ] = Path("models"),
    model: Annotated[
        Path | None, typer.Option("--model", help="model directory (default: newest)")
    ] = None,
    steps: Annotated[
        str | None,
        typer.Option(
            "--steps",
            help="comma-separated from fetch,features,train,predict,export (default: "
            "fetch,features,predict,export; train runs anyway when no model exists)",
        ),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="CNN epochs when training")] = None,
    cnn: Annotated[bool, typer.Option("--cnn/--no-cnn", help="train the CNN")] = True,
    trees: Annotated[int | None, typer.Option(help="forest trees when training")] = None,
    cv_seeds: Annotated[
        str | None,
        typer.Option("--cv-seeds", help="fold seeds of the CV when training (default: 0,1,2)"),
    ] = None,
    tsne: Annotated[bool, typer.Option("--tsne/--no-tsne", help="t-SNE maps")] = True,
    device: Annotated[str | None, typer.Option(help="torch device (default: auto)")] = None,
    export: Annotated[
        Path | None, typer.Option("--export", help="event predictions CSV (default: by store)")
    ] = None,
    store: StoreOpt = None,
    workers: WorkersOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The whole job: fetch (or ingest --sds), features, train if needed, predict, export
    (runs the ``catalog-reprocess`` flow). Re-runs only add what is new."""
    settings = _fetch_settings(
        config, store, fdsn_url, channel_priority, max_distance, cache, workers
    )
    _check_paths((sds, "--sds"), (stations, "--stations"), (events, "--events"))
    from pydantic import ValidationError

    from seismoflow.flows.reprocess import ReprocessParams, run_reprocess

    train_options: dict[str, Any] = {"cnn": cnn, "tsne": tsne}
    if epochs is not None:
        train_options["epochs"] = epochs
    if trees is not None:
        train_options["n_estimators"] = trees
    if cv_seeds is not None:
        train_options["cv_seeds"] = list(_cv_seeds(cv_seeds))
    if device is not None:
        train_options["device"] = device
    region = _region(
        minlatitude=minlatitude, maxlatitude=maxlatitude,
        minlongitude=minlongitude, maxlongitude=maxlongitude,
        latitude=latitude, longitude=longitude, maxradius=maxradius,
    )  # fmt: skip
    values: dict[str, Any] = {
        "store": settings.store,
        "start": start, "end": end, "last_days": last_days,
        "region": region, "providers": list(settings.fdsn_url),
        "minmagnitude": minmagnitude, "event_types": list(event_type or ()),
        "network": network, "station": station, "continuous": continuous,
        "archive": (
            {"sds": str(sds), "stations": str(stations) if stations else None,
             "events": str(events) if events else None} if sds else None
        ),
        "models_dir": str(models_dir), "model": str(model) if model else None,
        "train_options": train_options, "tsne": tsne, "device": device,
        "export": str(export) if export else None,
        "settings": settings.model_dump(exclude={"store", "fdsn_url"}, exclude_defaults=True),
    }  # fmt: skip
    if steps:
        values["steps"] = [s.strip() for s in steps.split(",") if s.strip()]
    try:
        params = ReprocessParams(**values)
    except (ValidationError, ValueError) as exc:
        raise BadInputError(f"run options: {exc}") from exc
    summary = run_reprocess(params)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, sort_keys=True, default=str))
    else:
        for step, what in summary["steps"].items():
            console.print(f"{step}: {what}")
        console.print(f"counts: {summary['counts']}")
        console.print(f"seconds: {summary['seconds']}")


@app.command()
def deploy(
    api_url: Annotated[
        str | None, typer.Option("--api-url", help="Prefect API (default: PREFECT_API_URL)")
    ] = None,
    store: StoreOpt = None,
    models_dir: Annotated[
        Path, typer.Option("--models-dir", help="folder of model directories")
    ] = Path("models"),
    config: ConfigOpt = None,
) -> None:
    """Create the ``cpu`` and ``gpu`` work pools and the scheduled deployments on a Prefect
    server (see deployments/)."""
    import os

    settings = _settings(config, store=store)
    if api_url:
        os.environ["PREFECT_API_URL"] = api_url
    from seismoflow.deployments import DeployOptions, deploy_all

    made = deploy_all(
        DeployOptions(store=settings.store, models_dir=str(models_dir.resolve()))
    )
    for name, deployment_id in made.items():
        typer.echo(f"deployment {name}: {deployment_id}")


if __name__ == "__main__":
    main()
