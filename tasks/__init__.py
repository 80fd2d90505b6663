"""Prefect tasks: a few lines each, calling plain functions from ``seismoflow`` and ``storage``."""
