"""seismoflow: FDSN and archive seismic data into a chunked Zarr v3 store, run by Prefect."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("seismoflow")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

# The documented entry points (seismoflow.api), imported on first use so that
# ``import seismoflow.storage`` does not load Prefect, ObsPy or the flows.
_API = ("features", "fetch", "ingest", "open_store", "predict", "train")

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> object:
    if name in _API:
        import importlib

        return getattr(importlib.import_module("seismoflow.api"), name)
    raise AttributeError(f"module 'seismoflow' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
