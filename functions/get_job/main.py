"""get-job: one training job with its dataset, chart-ready metrics and costs, for its owner.

GET /<job id> (or /?job_id=<job id>) with `Authorization: Bearer <Supabase user JWT>`. Query:
`max_points` (2-5000, default 500): the series is downsampled in the database to at most that
many points, keeping the first and last and each range's lowest and highest loss; `since_step`:
only the points after that step, for incremental polling. Answers with an ETag, and 304 to an
`If-None-Match` that names it. RLS decides what the caller sees: another user's job is a 404.

A queued job comes with its place in line and why it waits (`queue`); a completed job whose run
stored its adapter comes with short-lived signed download URLs for it (`adapter`), fresh on every
200 and left out of the ETag.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import functions_framework
from flask import Request, Response

from shared.errors import ArtifactMissing, ConfigurationError, StorageError
from shared.http import (
    bearer_token,
    etag_response,
    int_param,
    job_id_from,
    serve,
    set_up_function,
)
from shared.logs import log_event
from shared.services.api import api_settings, token_verifier
from shared.services.database import database
from shared.services.storage import storage
from shared.storage import adapter_location
from shared.storage.artifacts import DOWNLOAD_URL_TTL_SECONDS

set_up_function()

DEFAULT_MAX_POINTS = 500
# Whole numbers only here; get_job_detail bounds max_points (2 to 5000) and says so.
LARGEST_INTEGER = 2**31 - 1


@functions_framework.http
def get_job(request: Request) -> Response:
    return serve(request, ["GET"], _get_job, api_settings)


def _get_job(request: Request) -> Response:
    user = token_verifier().verify(bearer_token(request))
    job_id = job_id_from(request, query_param="job_id")
    max_points = int_param(
        request, "max_points", default=DEFAULT_MAX_POINTS, minimum=0, maximum=LARGEST_INTEGER
    )
    since_step = int_param(request, "since_step", default=None, minimum=0, maximum=LARGEST_INTEGER)
    db = database()
    detail = db.call(
        "get_job_detail",
        {"p_job_id": job_id, "p_max_points": max_points, "p_since_step": since_step},
        as_user=user,
    )
    job = detail["job"]
    detail["queue"] = None
    if job["status"] == "queued":
        detail["queue"] = db.call(
            "get_job_queue",
            {
                "p_job_id": job_id,
                "p_default_user_limit": api_settings().processor_max_active_jobs_per_user,
            },
            as_user=user,
        )
    return etag_response(
        request, {"success": True, "data": detail}, fresh={"adapter": _adapter_download(job)}
    )


def _adapter_download(job: dict[str, Any]) -> dict[str, Any] | None:
    """Short-lived download URLs for a completed job's adapter, when its run stored one where
    this job's own uploads go; None otherwise (a simulator's run, or nothing stored)."""
    if job["status"] != "completed" or job["artifact_location"] != adapter_location(
        job["user_id"], job["id"]
    ):
        return None
    expires_at = datetime.now(UTC) + timedelta(seconds=DOWNLOAD_URL_TTL_SECONDS)
    try:
        files = storage().adapter_download_urls(job["user_id"], job["id"])
    except ArtifactMissing:
        return None
    except ConfigurationError as exc:
        # The job itself can still be shown; the log says what to configure.
        log_event("adapter downloads need storage settings", severity="ERROR", error=exc.message)
        return None
    except StorageError as exc:
        log_event(
            "adapter download unavailable", severity="WARNING", job_id=job["id"], error=exc.message
        )
        return None
    return {"files": files, "expires_at": expires_at.isoformat()}
