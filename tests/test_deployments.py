"""Deployments: pools and schedules as data, then created on a real Prefect server, served by
a real ``prefect worker`` process, and a reprocessing run triggered and awaited."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from seismoflow.deployments import CPU_POOL, GPU_POOL, DeployOptions, deploy_all, specs
from seismoflow.storage.tables import read_table

from tests.conftest import OUTPUT, cli_env, run_cli


def test_specs_bind_training_to_gpu_and_schedule_nightly(tmp_path: Path) -> None:
    options = DeployOptions(store=str(tmp_path / "s.zarr"), models_dir=str(tmp_path / "m"))
    by_name = {s.name: s for s in specs(options)}
    assert set(by_name) == {"nightly", "refresh-predictions", "archive", "retrain"}
    assert by_name["retrain"].pool == GPU_POOL and by_name["retrain"].cron
    assert all(s.pool == CPU_POOL for n, s in by_name.items() if n != "retrain")
    nightly = by_name["nightly"]
    assert nightly.cron == options.nightly_cron and nightly.parameters["params"]["last_days"] == 1
    assert by_name["refresh-predictions"].parameters["params"]["steps"] == ["predict", "export"]


def test_entrypoints_load_and_parameters_validate(tmp_path: Path) -> None:
    from prefect.flows import load_flow_from_entrypoint
    from seismoflow.flows.reprocess import ReprocessParams

    options = DeployOptions(store=str(tmp_path / "s.zarr"), models_dir=str(tmp_path / "m"))
    names = {"nightly": "catalog-reprocess", "refresh-predictions": "catalog-reprocess",
             "archive": "archive-batches", "retrain": "train-models"}  # fmt: skip
    for spec in specs(options):
        # Installed module entrypoints: no checkout path travels to the worker.
        assert spec.entrypoint.startswith("seismoflow."), spec.entrypoint
        assert ".py" not in spec.entrypoint and "/" not in spec.entrypoint
        loaded = load_flow_from_entrypoint(spec.entrypoint.replace(":", "."))
        assert loaded.name == names[spec.name]
        if loaded.name == "catalog-reprocess":
            ReprocessParams(**spec.parameters["params"])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Workers ignore the first SIGTERM while they shut down: terminate, wait, then kill."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)


@pytest.mark.slow
def test_deploy_and_run_reprocessing_on_a_process_worker(
    prefect_server: str, archive: Path, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    store = tmp_path / "store.zarr"
    made = deploy_all(DeployOptions(store=str(store), models_dir=str(tmp_path / "models")))
    assert set(made) == {
        "catalog-reprocess/nightly",
        "catalog-reprocess/refresh-predictions",
        "archive-batches/archive",
        "train-models/retrain",
    }
    # The worker boots (its imports take seconds) while `seismoflow deploy` runs below.
    log_path = tmp_path / "worker.log"
    prefect = shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"
    env = cli_env(prefect_server, PREFECT_WORKER_QUERY_SECONDS="2")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [prefect, "worker", "start", "--pool", CPU_POOL, "--type", "process"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
        )  # fmt: skip
        try:
            # `seismoflow deploy` does the same; re-running updates, it does not duplicate.
            args = ["deploy", "--api-url", prefect_server, "--store", str(store),
                    "--models-dir", str(tmp_path / "models")]  # fmt: skip
            shown = run_cli(args, prefect_server).stdout
            for name, deployment_id in made.items():
                assert f"deployment {name}: {deployment_id}" in shown
            with get_client(sync_client=True) as client:
                for pool in (CPU_POOL, GPU_POOL):
                    assert client.read_work_pool(pool).type == "process"
                nightly = client.read_deployment_by_name("catalog-reprocess/nightly")
                assert nightly.work_pool_name == CPU_POOL
                assert [getattr(s.schedule, "cron", None) for s in nightly.schedules] == [
                    "30 2 * * *"
                ]
                assert nightly.entrypoint.startswith("seismoflow.flows.reprocess")
                assert nightly.path in (None, "", ".") and not nightly.pull_steps, nightly
                retrain = client.read_deployment_by_name("train-models/retrain")
                assert retrain.work_pool_name == GPU_POOL and retrain.schedules

            # One month of the real archive, ingested: small and quick.
            params = {
                "store": str(store),
                "models_dir": str(tmp_path / "models"),
                "archive": {"sds": str(archive / "sds"),
                            "stations": str(archive / "stations.xml.gz"),
                            "events": str(archive / "events.xml")},
                "start": "2022-01-01T00:00:00Z",
                "end": "2022-01-03T00:00:00Z",
                "steps": ["fetch"],
            }  # fmt: skip
            run = run_deployment(
                "catalog-reprocess/nightly", parameters={"params": params}, timeout=0
            )
            state = None
            deadline = time.monotonic() + 900
            with get_client(sync_client=True) as client:
                while time.monotonic() < deadline:
                    state = client.read_flow_run(run.id).state
                    if state is not None and state.is_final():
                        break
                    assert worker.poll() is None, log_path.read_text()[-3000:]
                    time.sleep(2)
        finally:
            _stop(worker)
    OUTPUT.mkdir(exist_ok=True)
    shutil.copy(log_path, OUTPUT / "deployment-worker.log")
    assert state is not None and state.is_completed(), (state, log_path.read_text()[-4000:])
    days = read_table(str(store), "channel_days")
    assert len(days) > 0  # the worker's flow run wrote the store
