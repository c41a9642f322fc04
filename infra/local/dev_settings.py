"""`make dev`'s settings, from the environment, and the ports they name.

Every port is a setting, and port 0 picks a free one: the tests start the same stack on free ports.
"""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO = Path(__file__).resolve().parents[2]
# Loopback only: PostgreSQL trusts every local login, and nothing here is meant to be reachable
# from another machine.
HOST = "127.0.0.1"


class DevSettings(BaseSettings):
    """What `make dev` can be told, from the environment; port 0 picks a free port."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", populate_by_name=True)

    pg_port: int = Field(default=54329, ge=0, le=65535, validation_alias="PG_PORT")
    s3_port: int = Field(default=54330, ge=0, le=65535, validation_alias="DEV_S3_PORT")
    cluster_port: int = Field(default=54331, ge=0, le=65535, validation_alias="DEV_CLUSTER_PORT")
    processor_port: int = Field(
        default=54332, ge=0, le=65535, validation_alias="DEV_PROCESSOR_PORT"
    )
    get_job_port: int = Field(default=54333, ge=0, le=65535, validation_alias="DEV_GET_JOB_PORT")
    cancel_job_port: int = Field(
        default=54334, ge=0, le=65535, validation_alias="DEV_CANCEL_JOB_PORT"
    )
    web_port: int = Field(default=54335, ge=0, le=65535, validation_alias="DEV_WEB_PORT")
    scheduler_interval_seconds: float = Field(
        default=3.0, gt=0, validation_alias="DEV_SCHEDULER_INTERVAL_SECONDS"
    )
    # 200 pairs, batch 8, 3 epochs: the first demo job's 75 steps take a minute and a quarter.
    steps_per_second: float = Field(default=1.0, gt=0, validation_alias="DEV_STEPS_PER_SECOND")
    init_seconds: float = Field(default=3.0, ge=0, validation_alias="DEV_INIT_SECONDS")
    token_ttl_hours: float = Field(default=12.0, gt=0, validation_alias="DEV_TOKEN_TTL_HOURS")
    # `simulator` (the default: starts in seconds, simulated curves) or `ray`: a local Ray head
    # runs the real trainer on a tiny model built here (slower to start; real loss curves).
    cluster: Literal["simulator", "ray"] = Field(default="simulator", validation_alias="CLUSTER")
    root: Path = Field(
        default=Path(tempfile.gettempdir()) / "lora-runner-dev", validation_alias="DEV_ROOT"
    )

    def port_settings(self) -> dict[str, int]:
        """Each port by the name of the environment variable that sets it."""
        return {
            str(info.validation_alias): getattr(self, name)
            for name, info in type(self).model_fields.items()
            if name.endswith("_port")
        }


class PortInUse(RuntimeError):
    """A port `make dev` was told to use is taken by another program."""


def check_ports(settings: DevSettings) -> None:
    """Raise :class:`PortInUse` naming every configured port another program listens on."""
    taken = [
        f"port {port} ({name})"
        for name, port in settings.port_settings().items()
        if port and not _port_free(HOST, port)
    ]
    if taken:
        raise PortInUse(
            f"already in use: {', '.join(taken)}. Stop what listens there, or set "
            "the variable in parentheses to another port (0 picks a free one)."
        )


def port_or_free(configured: int) -> int:
    """The configured port, or a free one when it is 0."""
    if configured:
        return configured
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        # As the servers themselves bind: connections of an earlier run still in TIME_WAIT do
        # not make the port taken, only a listener does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True
