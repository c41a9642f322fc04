"""Configuration from the environment (docs/architecture.md, "Configuration and logs").

Each function loads only the settings it needs (`load(DatabaseSettings)`), so get-job does not
demand the cluster's key. A missing or malformed variable fails at start with a
:class:`ConfigurationError` that names the variable.
"""

from __future__ import annotations

import re
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


class ConcurrencySettings(BaseSettings):
    """How many cluster calls the processor has in flight at once: the processor's bound, and the
    cluster client's connection pool, both read from this one setting."""

    model_config = _CONFIG

    # The processor never has more cluster calls in flight than this, so it also bounds the
    # connection pool: each call in flight gets a connection, none waits for one and none is
    # opened in vain.
    processor_concurrency: int = Field(default=100, ge=1, le=1000)


class ClusterSettings(ConcurrencySettings):
    """The GPU cluster (openapi/cluster.yaml): its REST API and how patiently to talk to it.
    cancel-job, which makes one call, reads it without any processor settings."""

    model_config = _CONFIG

    gpu_cluster_api_url: str
    gpu_cluster_api_key: SecretStr
    gpu_cluster_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    gpu_cluster_read_timeout_seconds: float = Field(default=15.0, gt=0)
    # Attempts within one call; across cycles the processor counts failures per job separately.
    gpu_cluster_max_attempts: int = Field(default=3, ge=1, le=10)
    # The API the cluster speaks at GPU_CLUSTER_API_URL: `rest` (openapi/cluster.yaml; the
    # simulator) or `ray` (Ray's Jobs REST API at the dashboard's URL: shared/cluster/ray.py).
    gpu_cluster_backend: Literal["rest", "ray"] = "rest"
    # Ray only: the command that runs the trainer on the cluster (`--spec <spec>` is appended),
    # and how many lines of a job's log a poll reads first.
    ray_trainer_entrypoint: str = Field(default="python -m trainer", pattern=r"\S")
    ray_log_tail_lines: int = Field(default=200, ge=10, le=10000)


class StorageSettings(BaseSettings):
    """Where dataset files live: Supabase Storage (default) or any S3-compatible store."""

    model_config = _CONFIG

    storage_backend: Literal["supabase", "s3"] = "supabase"
    # Where runs upload their adapters and checkpoints, under <user id>/<job id>/.
    artifacts_bucket: str = Field(
        default="lora-artifacts", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
    )
    supabase_url: str | None = None
    supabase_service_role_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_SECRET_KEY"),
    )
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None

    @model_validator(mode="after")
    def _backend_configured(self) -> StorageSettings:
        if self.storage_backend == "supabase":
            required = {
                "SUPABASE_URL": self.supabase_url,
                "SUPABASE_SERVICE_ROLE_KEY": self.supabase_service_role_key,
            }
        else:
            required = {
                "S3_ACCESS_KEY_ID": self.s3_access_key_id,
                "S3_SECRET_ACCESS_KEY": self.s3_secret_access_key,
            }
        missing = [name for name, value in required.items() if not value]
        if missing:
            raise ValueError(f"STORAGE_BACKEND={self.storage_backend} needs " + ", ".join(missing))
        return self


class UserLimitSettings(BaseSettings):
    """The default limit on a user's active jobs: the processor claims by it and get-job explains
    a queued job's wait by it, so both read this one setting."""

    model_config = _CONFIG

    # Active (initializing + running) jobs a user may have at once, unless public.user_job_limits
    # gives them their own limit.
    processor_max_active_jobs_per_user: int = Field(default=2, ge=0, le=1000)


class ProcessorSettings(UserLimitSettings, ConcurrencySettings):
    """One processor cycle: how much it takes on and how long it may run (docs/architecture.md,
    "The processor cycle")."""

    model_config = _CONFIG

    # Shared secret Supabase Cron sends as a bearer token. Behind Cloud Run IAM the platform
    # checks Cloud Scheduler's OIDC token instead: set PROCESSOR_TRUST_PLATFORM_AUTH=true there.
    cron_secret: SecretStr | None = None
    processor_trust_platform_auth: bool = False
    processor_claim_batch_size: int = Field(default=25, ge=1, le=1000)
    processor_poll_batch_size: int = Field(default=1000, ge=1, le=10000)
    processor_time_budget_seconds: float = Field(default=45.0, gt=0)
    processor_max_attempts: int = Field(default=5, ge=1)
    processor_poll_interval_seconds: float = Field(default=10.0, ge=0)
    processor_stall_factor: float = Field(default=10.0, gt=1)
    processor_stall_min_seconds: float = Field(default=300.0, ge=0)
    # Losing contact with the cluster about a running job is not the job's failure: polls back
    # off (doubling from the poll interval up to this) and the job fails only after contact has
    # been lost this long (6 hours by default), when the cluster is asked to stop its run.
    processor_poll_backoff_max_seconds: float = Field(default=300.0, ge=0)
    processor_lost_contact_fail_seconds: float = Field(default=6 * 3600.0, ge=0)
    # How long after a job ended its run is still asked about, for its last points, its own end
    # (billing) and how it really ended (a cancel can arrive after the run completed).
    processor_settle_seconds: float = Field(default=24 * 3600.0, ge=0)
    processor_cancel_batch_size: int = Field(default=200, ge=1, le=10000)

    @property
    def lease_seconds(self) -> int:
        """A lease outlives the cycle that took it, so only a crashed cycle's jobs are rescued."""
        return int(self.processor_time_budget_seconds * 2) + 30

    @model_validator(mode="after")
    def _some_authentication(self) -> ProcessorSettings:
        if self.cron_secret is None and not self.processor_trust_platform_auth:
            raise ValueError(
                "set CRON_SECRET, or PROCESSOR_TRUST_PLATFORM_AUTH=true behind Cloud Run IAM"
            )
        # A short shared secret can be guessed; like SUPABASE_JWT_SECRET, 32 characters or more.
        if self.cron_secret is not None and len(self.cron_secret.get_secret_value()) < 32:
            raise ValueError(
                "CRON_SECRET must be at least 32 characters long (e.g. `openssl rand -hex 32`)"
            )
        return self


class AuthSettings(BaseSettings):
    """How get-job and cancel-job verify Supabase user JWTs (docs/architecture.md, "The HTTP API").

    Tokens signed with the project's asymmetric keys (ES256, RS256) are checked against its JWKS,
    at SUPABASE_JWKS_URL or, by default, the one Supabase publishes under SUPABASE_URL; tokens
    signed with the legacy shared secret (HS256) against SUPABASE_JWT_SECRET. Either or both.
    """

    model_config = _CONFIG

    supabase_url: str | None = None
    supabase_jwks_url: str | None = None
    supabase_jwt_secret: SecretStr | None = None
    # How long fetched keys are trusted before the JWKS is read again.
    jwks_cache_seconds: float = Field(default=600.0, gt=0)
    # A token with an unknown key id refreshes the keys at most this often, so a stream of forged
    # key ids cannot make every request fetch the JWKS.
    jwks_refresh_cooldown_seconds: float = Field(default=30.0, ge=0)
    jwks_timeout_seconds: float = Field(default=5.0, gt=0)

    @property
    def jwks_url(self) -> str | None:
        if self.supabase_jwks_url:
            return self.supabase_jwks_url
        if self.supabase_url:
            return self.supabase_url.rstrip("/") + "/auth/v1/.well-known/jwks.json"
        return None

    @property
    def jwt_secret(self) -> str | None:
        return self.supabase_jwt_secret.get_secret_value() if self.supabase_jwt_secret else None

    @model_validator(mode="after")
    def _some_way_to_verify(self) -> AuthSettings:
        if self.jwks_url is None and self.jwt_secret is None:
            raise ValueError(
                "set SUPABASE_JWKS_URL (or SUPABASE_URL, from which it is derived) and/or "
                "SUPABASE_JWT_SECRET to verify users' tokens"
            )
        if self.jwks_url is not None and not self.jwks_url.startswith(("https://", "http://")):
            raise ValueError("SUPABASE_JWKS_URL must be an http(s) URL")
        # HS256 with a short secret is brute-forceable; Supabase's are 32 characters or longer.
        if self.jwt_secret is not None and len(self.jwt_secret) < 32:
            raise ValueError("SUPABASE_JWT_SECRET must be at least 32 characters long")
        return self


# A browser's Origin header: scheme, host (a name or a bracketed IPv6 address) and maybe a port.
_ORIGIN = re.compile(r"https?://([a-z0-9.-]+|\[[0-9a-f:.]+\])(:[0-9]{1,5})?")


class ApiSettings(UserLimitSettings):
    """The user-facing functions' HTTP behaviour: CORS, how long cancel-job waits for the cluster
    before leaving the cancel to the processor, and the user limit get-job explains waits by."""

    model_config = _CONFIG

    # Comma-separated origins (scheme://host[:port]) allowed to call from a browser; `*` allows
    # any (safe here: authentication is a bearer token, never a cookie). Empty: no CORS.
    allowed_origins: str = ""
    cancel_cluster_timeout_seconds: float = Field(default=5.0, gt=0)

    @property
    def origins(self) -> frozenset[str]:
        return frozenset(
            origin.strip().rstrip("/").lower()
            for origin in self.allowed_origins.split(",")
            if origin.strip()
        )

    @model_validator(mode="after")
    def _origins_well_formed(self) -> ApiSettings:
        malformed = sorted(o for o in self.origins if o != "*" and not _ORIGIN.fullmatch(o))
        if malformed:
            raise ValueError(
                "ALLOWED_ORIGINS takes scheme://host[:port] origins, comma-separated; not "
                + ", ".join(malformed)
            )
        return self
