"""Prefect deployments of the seismoflow flows: work pools, schedules, parameters.

``seismoflow deploy [--api-url URL]`` (or :func:`deploy_all`) creates, on the Prefect server:

- work pools ``cpu`` and ``gpu`` (both of type ``process``; start a worker on each kind of
  node with ``prefect worker start --pool cpu`` / ``--pool gpu``);
- ``catalog-reprocess/nightly``: the last day, every night (cron, UTC), on ``cpu``;
- ``catalog-reprocess/refresh-predictions``: predict + export with the newest model, no
  schedule (run after a retraining, or by hand), on ``cpu``;
- ``archive-batches/archive``: a parameterised archive batch on a Dask cluster, on ``cpu``;
- ``train-models/retrain``: weekly retraining, bound to ``gpu`` (the CNN trains on CUDA when
  the worker has it, on the CPU otherwise; the model directory format is the same).

Deployments point at the installed package (module entrypoints such as
``seismoflow.flows.reprocess:catalog_reprocess``), not at a checkout: a worker runs them on
any machine where ``pip install seismoflow[ml]`` put the same version in its environment.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

CPU_POOL, GPU_POOL = "cpu", "gpu"

# The README's example region: Mount St. Helens and surroundings (UW/CC networks).
EXAMPLE_SELECTION: dict[str, Any] = {
    "region": {"latitude": 46.2, "longitude": -122.19, "maxradius": 0.5},
    "minmagnitude": 0.5,
}


@dataclass(frozen=True)
class DeployOptions:
    """Where the deployed flows read and write, and when they run (cron strings, UTC)."""

    store: str
    models_dir: str
    nightly_cron: str = "30 2 * * *"
    retrain_cron: str = "0 4 * * 0"
    timezone: str = "UTC"
    nightly: dict[str, Any] = field(default_factory=lambda: dict(EXAMPLE_SELECTION))


@dataclass(frozen=True)
class Spec:
    """One deployment: flow entrypoint (``module:flow`` of the installed package), pool,
    schedule."""

    name: str
    entrypoint: str
    pool: str
    parameters: dict[str, Any]
    cron: str | None = None
    description: str = ""
    tags: tuple[str, ...] = ()


def specs(options: DeployOptions) -> list[Spec]:
    """The deployments :func:`deploy_all` creates (plain data, testable without a server)."""
    store, models = options.store, options.models_dir
    return [
        Spec(
            "nightly", "seismoflow.flows.reprocess:catalog_reprocess", CPU_POOL,
            {"params": {"store": store, "models_dir": models, "last_days": 1,
                        **options.nightly}},
            options.nightly_cron, "the last day: fetch, features, predict, export", ("nightly",),
        ),
        Spec(
            "refresh-predictions", "seismoflow.flows.reprocess:catalog_reprocess", CPU_POOL,
            {"params": {"store": store, "models_dir": models, "steps": ["predict", "export"]}},
            None, "predictions of the whole store with the newest model", ("predict",),
        ),
        Spec(
            "archive", "seismoflow.deployments.entrypoints:archive_batches", CPU_POOL,
            {"store": store}, None,
            "an archive batch (pass sds, stations, events, dask_address)", ("archive",),
        ),
        Spec(
            "retrain", "seismoflow.flows.train:train_models", GPU_POOL,
            {"store": store, "models_dir": models}, options.retrain_cron,
            "weekly retraining on the gpu pool", ("train", "gpu"),
        ),
    ]  # fmt: skip


def ensure_pools(pools: tuple[str, ...] = (CPU_POOL, GPU_POOL)) -> list[str]:
    """Create the ``process`` work pools that do not exist yet; return those created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    created = []
    with get_client(sync_client=True) as client:
        for name in pools:
            try:
                client.read_work_pool(name)
                continue
            except ObjectNotFound:
                pass
            client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type="process",
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                    description=f"seismoflow {name} nodes (process worker)",
                )
            )
            created.append(name)
    return created


def deploy_all(options: DeployOptions) -> dict[str, UUID]:
    """Create the pools and every deployment of :func:`specs`; ``{flow/name: id}``.

    Talks to the server at ``PREFECT_API_URL``. Re-running updates the deployments."""
    from prefect.deployments.runner import EntrypointType

    ensure_pools()
    out: dict[str, UUID] = {}
    for spec in specs(options):
        loaded = load_flow(spec.entrypoint)
        deployment_id = loaded.deploy(
            name=spec.name,
            work_pool_name=spec.pool,
            cron=spec.cron,
            parameters=spec.parameters,
            description=spec.description,
            tags=list(spec.tags),
            concurrency_limit=1,
            build=False,
            push=False,
            print_next_steps=False,
            ignore_warnings=True,
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
        out[f"{loaded.name}/{spec.name}"] = deployment_id
    return out


def load_flow(entrypoint: str) -> Any:
    """The flow object named by ``module:attribute`` (imported from the installed package)."""
    module, _, attribute = entrypoint.partition(":")
    return getattr(importlib.import_module(module), attribute)
