"""The errors seismoflow raises for what a user can fix, and the CLI's exit code for each.

Every message names the input (a path, an option, a URL, a model directory) and says what to
do. The CLI prints the message on one line and exits with the class's code; ``--debug`` shows
the traceback. Anything else that escapes is a bug in seismoflow (exit code 1).

| class | exit code | raised when |
|---|---|---|
| :class:`BadInputError` | 2 | an option, a file or a parameter cannot be used as given |
| :class:`StoreError` | 3 | the store is missing, of another schema, or lacks a step's input |
| :class:`FetchError` | 4 | a data centre cannot give what the run needs |
| :class:`ModelError` | 5 | a model directory cannot be used, or the ``ml`` extra is missing |

This module imports nothing from seismoflow: every layer, the store included, raises these.
"""

from __future__ import annotations

import importlib.util

EXIT_OK = 0
EXIT_BUG = 1
EXIT_INTERRUPTED = 130


class SeismoflowError(Exception):
    """A failure the user can act on; ``str(error)`` names the input and what to do."""

    exit_code: int = EXIT_BUG


class BadInputError(SeismoflowError, ValueError):
    """An option, file or parameter that cannot be used as given (also a ``ValueError``)."""

    exit_code = 2


class StoreError(SeismoflowError):
    """No store at the location, a store of another schema, or a step's input missing from it
    (the message names the command that makes it)."""

    exit_code = 3


class FetchError(SeismoflowError):
    """A data centre could not give what the run needs (after the retries)."""

    exit_code = 4


class ModelError(SeismoflowError):
    """A model directory that cannot be used (missing, tampered, of another feature set), or
    the machine-learning dependencies are not installed."""

    exit_code = 5


class UnsafeModelError(ModelError, ValueError):
    """A model file that could run code when loaded (pickled objects, unknown types)."""


class ModelDirectoryError(ModelError, ValueError):
    """A model directory that is missing, incomplete or altered."""


#: Exit codes by class, for the CLI's help and the documentation.
EXIT_CODES: dict[str, int] = {
    cls.__name__: cls.exit_code for cls in (BadInputError, StoreError, FetchError, ModelError)
}


def require_ml(what: str) -> None:
    """Raise :class:`ModelError` naming ``what`` when torch or scikit-learn is missing: they
    come with ``pip install 'seismoflow[ml]'``, and reading, fetching and ingesting do not
    need them."""
    missing = [m for m in ("torch", "sklearn", "skops") if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelError(
            f"{what} needs {', '.join(missing)}, which this environment lacks: "
            "install them with `pip install 'seismoflow[ml]'`"
        )
