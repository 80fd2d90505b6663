"""Prefect deployments of the seismoflow flows.

Schedules and work pools (nightly reprocessing, archive batches, GPU training) are built
with the orchestration work; until then every flow runs directly from the ``seismoflow`` CLI.
"""
