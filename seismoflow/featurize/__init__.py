"""Physics features of the store's windows, and the noise examples they are learned with.

- :mod:`.physics`: the features as plain NumPy functions and the ``FEATURES`` table;
- :mod:`.arrivals`: predicted P and S times that place the P/S windows (else the onset
  detected by :func:`.physics.detect_onset`);
- :mod:`.noise`: noise windows drawn from recorded stretches with no catalogued event;
- :mod:`.extract`: dask extraction over the store, ``read_features``.
"""

from seismoflow.featurize.physics import (
    FEATURE_NAMES,
    FEATURE_SET,
    FEATURES,
    Feature,
    window_features,
)

__all__ = [
    "FEATURES",
    "FEATURE_NAMES",
    "FEATURE_SET",
    "Feature",
    "read_features",
    "window_features",
]


def __getattr__(name: str) -> object:
    # read_features pulls in xarray and the store; import it only when asked for.
    if name == "read_features":
        from seismoflow.featurize.extract import read_features

        return read_features
    raise AttributeError(name)
