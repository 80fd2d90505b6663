"""Fetch events, stations and waveforms from FDSN web services into the store.

Plain functions live in :mod:`seismoflow.fetch.client` (HTTP, retries, politeness),
:mod:`seismoflow.fetch.select` (what to request) and :mod:`seismoflow.fetch.run` (requests,
staging and the ledger); ``flows/fetch.py`` wires them as a Prefect flow.
"""
