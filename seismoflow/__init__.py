"""seismoflow: FDSN and archive seismic data into a chunked Zarr v3 store, run by Prefect."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("seismoflow")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
