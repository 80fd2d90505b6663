"""Prefect flows: wiring of the tasks in ``tasks``; no numerics here."""
