"""``ingest-archive``: a local archive (SDS or miniSEED/SAC folder) into the store."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import unmapped
from seismoflow.tasks import ingest as t

from seismoflow.ingest import plan_summary, summarize_units
from seismoflow.progress import progress
from seismoflow.settings import Settings


@flow(name="ingest-archive", log_prints=True)
def ingest_archive(
    sds: str,
    stations: str | None = None,
    events: str | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Ingest an archive: continuous channel-days, then event windows; returns the summary."""
    s = Settings(**(settings or {}))
    logger = get_run_logger()
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    plan = t.open_archive(s, sds, stations, events, start_ns, end_ns)
    timings["plan"] = time.perf_counter() - clock
    logger.info("planned %s", plan_summary(plan))

    clock = time.perf_counter()
    batches = plan.batches(s.batch_bytes)
    results = []
    unit_futures = t.ingest_batch.map(unmapped(s.store), batches, unmapped(s))
    with progress("channel-days", len(plan.units)) as advance:
        for unit_future in as_completed(list(unit_futures)):
            batch = unit_future.result()
            results.extend(batch)
            advance(len(batch))
    t.record_continuous(s.store, results)
    timings["continuous"] = time.perf_counter() - clock
    summary: dict[str, Any] = {**plan_summary(plan), **summarize_units(results)}
    summary["quarantined"] += len(plan.problems)

    windows: dict[str, int] = {}
    if events:
        clock = time.perf_counter()
        pending = t.prepare_windows(s.store, s)
        chunks = [pending[i : i + s.window_batch] for i in range(0, len(pending), s.window_batch)]
        with progress("event windows", len(pending)) as advance:
            for fut in as_completed(
                list(t.cut_windows.map(unmapped(s.store), chunks, unmapped(s)))
            ):
                counts = fut.result()
                for k, v in counts.items():
                    windows[k] = windows.get(k, 0) + v
                advance(counts.get("written", 0))
        timings["windows"] = time.perf_counter() - clock
    summary["windows"] = windows
    t.finalize(s.store)
    summary["seconds"] = {k: round(v, 2) for k, v in timings.items()}
    _publish(summary)
    logger.info("ingest summary %s", summary)
    return summary


def _publish(summary: dict[str, Any]) -> None:
    lines = ["# Archive ingest", "", "| what | count |", "|---|---|"]
    for key in (
        "files",
        "units",
        "units_written",
        "units_skipped",
        "units_empty",
        "units_failed",
        "samples_written",
        "quarantined",
        "skipped_hidden",
        "events",
    ):
        lines.append(f"| {key} | {summary.get(key, 0)} |")
    if summary.get("skipped_hidden_first"):
        shown = ", ".join(summary["skipped_hidden_first"])
        lines += ["", f"Hidden files skipped (name starts with '.'): {shown}"]
    lines += ["", "## Quality flags (channel-days)", "", "| flag | channel-days |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(summary.get("flags", {}).items())]
    lines += ["", "## Event windows", "", "| what | traces |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(summary.get("windows", {}).items())]
    lines += ["", "## Seconds per stage", "", "| stage | s |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary.get("seconds", {}).items()]
    create_markdown_artifact(
        "\n".join(lines), key="ingest-summary", description="counts of an archive ingest"
    )
    reasons = summary.get("quarantine_reasons", {})
    if reasons:
        create_table_artifact(
            [{"reason": k, "count": v} for k, v in sorted(reasons.items())],
            key="ingest-quarantine",
            description="quarantine reasons",
        )


def run_ingest(
    settings: Settings,
    sds: str,
    stations: str | None,
    events: str | None,
    start_ns: int | None,
    end_ns: int | None,
) -> dict[str, Any]:
    """Run the flow with a thread pool sized by the settings."""
    runner: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(max_workers=settings.max_workers)
    return ingest_archive.with_options(task_runner=runner)(  # type: ignore[arg-type]
        sds=sds,
        stations=stations,
        events=events,
        start_ns=start_ns,
        end_ns=end_ns,
        settings=settings.model_dump(),
    )
