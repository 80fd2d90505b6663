"""The ``seismoflow`` command line. Pipeline work runs as Prefect flows; ``info`` and
``export`` read the store directly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from seismoflow.settings import Settings, load_settings
from seismoflow.times import to_ns

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Seismic data from FDSN services and archives into a Zarr store.",
)
export_app = typer.Typer(no_args_is_help=True, help="Export data from a store.")
app.add_typer(export_app, name="export")
console = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML settings file")]
StoreOpt = Annotated[str | None, typer.Option("--store", help="store path or fsspec URL")]


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **overrides)
    except Exception as exc:  # noqa: BLE001 - show the user what to fix, not a traceback
        console.print(f"[red]settings error:[/red] {exc}")
        raise typer.Exit(2) from exc


def _time(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        return to_ns(value)
    except Exception as exc:  # noqa: BLE001
        console.print(f"[red]{option} {value!r} is not an ISO time[/red] (e.g. 2022-01-02T00:00)")
        raise typer.Exit(2) from exc


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
    workers: Annotated[int | None, typer.Option(help="parallel tasks")] = None,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
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
    for path, option in ((sds, "--sds"), (stations, "--stations"), (events, "--events")):
        if path is not None and not path.exists():
            console.print(f"[red]{option} {path} does not exist[/red]")
            raise typer.Exit(2)
    from flows.ingest import run_ingest

    summary = run_ingest(
        settings,
        str(sds),
        str(stations) if stations else None,
        str(events) if events else None,
        _time(start, "--start"),
        _time(end, "--end"),
    )
    if as_json:
        typer.echo(json.dumps(summary, indent=2, sort_keys=True))
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


@app.command()
def info(
    store: StoreOpt = None,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Summarise a store: events, stations, channels, traces, samples, quarantine."""
    settings = _settings(config, store=store)
    from storage.location import store_exists

    if not store_exists(settings.store):
        console.print(
            f"[red]no seismoflow store at {settings.store}[/red]; run "
            "`seismoflow ingest` first or check --store"
        )
        raise typer.Exit(1)
    summary = _info(settings.store)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, sort_keys=True))
    else:
        _print_info(summary)


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
        console.print("[red]give exactly one of --event ID or --station NET.STA[/red]")
        raise typer.Exit(2)
    try:
        if event is not None:
            stream = export_event(settings.store, event)
        else:
            t0, t1 = _time(start, "--start"), _time(end, "--end")
            if t0 is None or t1 is None or station is None or "." not in station:
                console.print("[red]--station NET.STA needs --start and --end[/red]")
                raise typer.Exit(2)
            stream = export_station(settings.store, station, t0, t1)
        write_mseed(stream, out)
    except (KeyError, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"wrote {len(stream)} traces to {out}")


if __name__ == "__main__":
    app()
