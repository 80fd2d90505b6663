"""``predict``: apply a model directory to a store and write the results back into it."""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from seismoflow.errors import require_ml
from seismoflow.featurize.extract import require_features
from seismoflow.settings import Settings


@flow(name="predict", log_prints=True)
def predict(
    store: str,
    model: str,
    tsne: bool = True,
    device: str | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Predict every window of ``store`` with the model directory ``model``; write a new
    prediction version; returns the summary. The store must hold features (``seismoflow
    features``); ``settings`` are the run's settings (its task runner comes from
    :func:`run_predict`)."""
    require_ml("prediction")
    from seismoflow.tasks import models as t

    from seismoflow.models.predict import event_table, unpredicted_events
    from seismoflow.models.registry import code_version

    logger = get_run_logger()
    bundle = t.load_model(model)
    require_features(store)
    examples, features = t.load_inputs(store, unlabelled=True)
    preds = t.predict(store, examples, features, bundle, tsne, device)
    missing = unpredicted_events(store, examples)
    run_id = str(flow_run.id) if flow_run.id else ""
    attrs: dict[str, Any] = {
        "model_id": bundle.model_id,
        "model_dir": str(bundle.directory),
        "primary": str(bundle.metadata["primary"]),
        "code_version": code_version(),
        "model_code_version": bundle.metadata.get("code_version"),
        "flow_run_id": run_id,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "tsne": "recomputed over this prediction set (t-SNE has no transform)"
        if tsne
        else "not computed",
        "calibration": bundle.metadata.get("calibration", {}).get("method", "none"),
        "temperature": preds.temperature,
        "unpredicted_events": missing.to_dict(orient="records"),
    }
    version = t.write_predictions(store, preds, attrs)
    events = event_table(preds)
    out: dict[str, Any] = {
        "store": store,
        "version": version,
        "model_id": bundle.model_id,
        "flow_run_id": run_id,
        "n_traces": len(preds.examples),
        "n_events": len(events),
        "trace_classes": _counts(preds.predicted_class),
        "event_classes": _counts(events["event_class"].to_numpy()),
        "unpredicted_events": missing.to_dict(orient="records"),
    }
    create_markdown_artifact(
        "\n".join(
            [
                f"# Predictions {version}",
                "",
                f"Model `{bundle.model_id}` on `{store}`: {out['n_traces']} windows, "
                f"{out['n_events']} events.",
                "",
                "| class | windows | events |",
                "|---|---|---|",
                *(
                    f"| {c} | {out['trace_classes'].get(c, 0)} | {out['event_classes'].get(c, 0)} |"
                    for c in bundle.classes
                ),
                "",
                f"Catalogued events without a prediction (no usable trace): {len(missing)}",
                *(f"- `{r.event_id}`: {r.reason}" for r in missing.itertuples(index=False)),
            ]
        ),
        key="predict-summary",
        description="a prediction run",
    )
    top = preds.examples.assign(anomaly_score=preds.anomaly).nlargest(20, "anomaly_score")
    create_table_artifact(
        [
            {"trace_key": str(k), "anomaly_score": round(float(s), 4)}
            for k, s in zip(top["trace_key"], top["anomaly_score"], strict=True)
        ],
        key="predict-anomalies",
        description="the 20 most anomalous windows",
    )
    _publish_review(store, preds, version)
    logger.info(
        "predict: version %s, %d windows, %d events (%s)", version, out["n_traces"],
        out["n_events"], ", ".join(f"{k} {v}" for k, v in out["event_classes"].items()),
    )  # fmt: skip
    return out


REVIEW_EVENTS = 20


def _publish_review(store: str, preds: Any, version: str) -> None:
    """The review table artifact: the least certain events, for an analyst to label."""
    import tempfile
    from pathlib import Path

    from seismoflow.models.predict import review_markdown, review_table

    review = review_table(preds, REVIEW_EVENTS)
    if review.empty:
        return
    with tempfile.TemporaryDirectory() as tmp:
        table = review_markdown(store, review, Path(tmp))
    create_markdown_artifact(
        f"# Events to review ({version})\n\nThe {len(review)} least certain events "
        "(uncertainty = 1 - margin between the two most probable classes, calibrated event "
        "probabilities). Label them with `seismoflow labels import`.\n\n" + table,
        key="predict-review",
        description="the least certain events of a prediction run",
    )


def _counts(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return out


def run_predict(
    settings: Settings, model: str, tsne: bool = True, device: str | None = None
) -> dict[str, Any]:
    return predict(
        store=settings.store, model=model, tsne=tsne, device=device,
        settings=settings.model_dump(),
    )  # fmt: skip
