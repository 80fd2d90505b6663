"""The seismoflow store: one schema (:mod:`storage.schema`), region writers and readers."""

import warnings

# pcodec and delta are numcodecs codecs that zarr-python reads and writes; the store
# documents them (STORE.md), so zarr's per-array notice is noise for our users.
warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr version 3")
