"""Credentials for restricted FDSN data, kept out of every log, parameter and artifact.

They come from, in order: a Prefect Secret block named by the setting ``fdsn_secret_block``
(holding ``user:password``), the environment (``SEISMOFLOW_FDSN_USER`` and
``SEISMOFLOW_FDSN_PASSWORD``), or an EIDA token file (setting ``fdsn_token_file``, a path).
They are resolved inside the task that opens the connection, never passed as flow or task
parameters, and held as :class:`pydantic.SecretStr`, whose ``repr`` is masked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from seismoflow.settings import Settings

USER_ENV = "SEISMOFLOW_FDSN_USER"
PASSWORD_ENV = "SEISMOFLOW_FDSN_PASSWORD"


@dataclass(frozen=True)
class Credentials:
    user: SecretStr | None = None
    password: SecretStr | None = None
    token_file: str | None = None

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ObsPy's ``Client`` (used only to construct it)."""
        if self.token_file:
            return {"eida_token": self.token_file}
        if self.user is not None and self.password is not None:
            return {
                "user": self.user.get_secret_value(),
                "password": self.password.get_secret_value(),
            }
        return {}

    def __bool__(self) -> bool:
        return bool(self.token_file) or (self.user is not None and self.password is not None)

    @property
    def kind(self) -> str:
        """What kind of credential is in use (safe to log)."""
        if self.token_file:
            return "eida-token"
        return "user/password" if self else "none"


def resolve_credentials(settings: Settings, environ: dict[str, str] | None = None) -> Credentials:
    """The credentials of a run (see the module docstring for the order)."""
    env = os.environ if environ is None else environ
    if settings.fdsn_secret_block:
        from prefect.blocks.system import Secret

        value = str(Secret.load(settings.fdsn_secret_block).get())  # type: ignore[union-attr]
        user, sep, password = value.partition(":")
        if not sep:
            raise ValueError(
                f"Prefect Secret block {settings.fdsn_secret_block!r} must hold 'user:password'"
            )
        return Credentials(SecretStr(user), SecretStr(password))
    if env.get(USER_ENV) and env.get(PASSWORD_ENV):
        return Credentials(SecretStr(env[USER_ENV]), SecretStr(env[PASSWORD_ENV]))
    if settings.fdsn_token_file:
        if not os.path.isfile(settings.fdsn_token_file):
            raise FileNotFoundError(
                f"EIDA token file {settings.fdsn_token_file} does not exist; check fdsn_token_file"
            )
        return Credentials(token_file=settings.fdsn_token_file)
    return Credentials()
