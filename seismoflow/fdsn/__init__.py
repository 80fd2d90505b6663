"""Fetch events, stations and waveforms from FDSN web services into the store.

Plain functions live in :mod:`seismoflow.fdsn.client` (HTTP, retries, politeness),
:mod:`seismoflow.fdsn.select` (what to request) and :mod:`seismoflow.fdsn.run` (requests,
staging and the ledger); ``flows/fetch.py`` wires them as a Prefect flow.
"""
