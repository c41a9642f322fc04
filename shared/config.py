"""Configuration from the environment (DESIGN section 9).

Each function loads only the settings it needs (`load(DatabaseSettings)`), so get-job does not
demand the cluster's key. A missing or malformed variable fails at start with a
:class:`ConfigurationError` that names the variable.
"""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import ConfigurationError

_S = TypeVar("_S", bound=BaseSettings)

_CONFIG = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")


class DatabaseSettings(BaseSettings):
    """How to reach the database: directly (DATABASE_URL) or through Supabase's PostgREST.

    DATABASE_URL wins when both are set: it is one hop shorter, and local dev and tests use it.
    """

    model_config = _CONFIG

    database_url: SecretStr | None = None
    db_pool_min_size: int = Field(default=1, ge=0)
    db_pool_max_size: int = Field(default=10, ge=1)
    supabase_url: str | None = None
    supabase_service_role_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_SECRET_KEY"),
    )
    supabase_anon_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("SUPABASE_ANON_KEY", "SUPABASE_PUBLISHABLE_KEY"),
    )
    db_timeout_seconds: float = Field(default=10.0, gt=0)

    @property
    def transport(self) -> Literal["direct", "postgrest"]:
        return "direct" if self.database_url is not None else "postgrest"

    @model_validator(mode="after")
    def _one_transport_configured(self) -> DatabaseSettings:
        if self.database_url is not None:
            return self
        missing = [
            name
            for name, value in (
                ("SUPABASE_URL", self.supabase_url),
                ("SUPABASE_SERVICE_ROLE_KEY", self.supabase_service_role_key),
                ("SUPABASE_ANON_KEY", self.supabase_anon_key),
            )
            if not value
        ]
        if missing:
            raise ValueError(
                "set DATABASE_URL, or " + ", ".join(missing) + " for the Supabase REST API"
            )
        return self


def load(settings_class: type[_S]) -> _S:
    """Read `settings_class` from the environment, or fail with the names of what is wrong."""
    try:
        return settings_class()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]).upper()
            if error["type"] == "missing":
                problems.append(f"missing required setting {name}")
            elif name:
                problems.append(f"{name}: {error['msg']}")
            else:
                problems.append(str(error["msg"]).removeprefix("Value error, "))
        raise ConfigurationError(f"{settings_class.__name__}: " + "; ".join(problems)) from exc
