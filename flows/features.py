"""``extract-features``: noise windows, then physics features of every window, into the store."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.utilities.annotations import unmapped
from seismoflow.tasks import features as t
from seismoflow.tasks.pool import TaskPool

from seismoflow.featurize.physics import FEATURES
from seismoflow.settings import Settings

CHANNEL_SETS_PER_TASK = 4


@flow(name="extract-features", log_prints=True)
def extract_features(
    settings: dict[str, Any] | None = None, dask_address: str | None = None
) -> dict[str, Any]:
    """Draw and screen noise windows, then compute features of ``events/`` and ``noise/``."""
    s = Settings(**(settings or {}))
    logger = get_run_logger()
    plan = t.plan_noise(s.store, s)
    names = sorted(plan.candidates)
    batches = [
        names[i : i + CHANNEL_SETS_PER_TASK] for i in range(0, len(names), CHANNEL_SETS_PER_TASK)
    ]
    noise: dict[str, int] = {f"dropped_{k}": v for k, v in plan.dropped.items()} | {
        "candidates": sum(len(v) for v in plan.candidates.values())
    }
    with TaskPool.of(s) as pool:
        cuts = pool.map(t.cut_noise, unmapped(s.store), batches, unmapped(plan), unmapped(s))
        for fut in as_completed(list(cuts)):
            for k, v in fut.result().items():
                noise[k] = noise.get(k, 0) + v
    logger.info(
        "noise windows: %s", ", ".join(f"{v} {k}" for k, v in sorted(noise.items())) or "none"
    )
    run_id = str(flow_run.get_id() or "")
    features = t.extract_features(s.store, s.feature_block_traces, dask_address, run_id)
    t.finalize(s.store)
    summary = {"noise": noise, "features": features, "n_features": len(FEATURES)}
    _publish(summary)
    for group, counts in features.items():
        logger.info(
            "features of %s: %d traces (%d with data), %s traces/s", group,
            counts.get("traces", 0), counts.get("traces_with_features", 0),
            counts.get("traces_per_s", "-"),
        )  # fmt: skip
    return summary


def _publish(summary: dict[str, Any]) -> None:
    lines = ["# Feature extraction", "", "## Noise windows", "", "| what | count |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(summary["noise"].items())]
    lines += ["", "## Features", "", "| group | traces | with features | s | traces/s |"]
    lines += ["|---|---|---|---|---|"]
    for group, c in summary["features"].items():
        lines.append(
            f"| {group} | {c['traces']} | {c['traces_with_features']} | {c['seconds']} "
            f"| {c['traces_per_s']} |"
        )
    lines += ["", f"{summary['n_features']} features per trace (`seismoflow.featurize.FEATURES`)."]
    create_markdown_artifact(
        "\n".join(lines), key="feature-summary", description="noise windows and features"
    )


def run_features(settings: Settings, dask_address: str | None = None) -> dict[str, Any]:
    """Run the flow with a thread pool sized by the settings."""
    return extract_features(
        settings=settings.model_dump(), dask_address=dask_address
    )
