"""process-training-jobs: one processor cycle per call (Cloud Scheduler or Supabase Cron).

POST only. Authenticated by `Authorization: Bearer <CRON_SECRET>`, or by the platform when the
function is deployed behind Cloud Run IAM (PROCESSOR_TRUST_PLATFORM_AUTH=true). Answers and logs
the cycle summary as JSON.
"""

from __future__ import annotations

import asyncio
from typing import Any

import functions_framework
from flask import Request, Response

from shared.errors import LoraRunnerError
from shared.http import (
    bearer_token,
    error_response,
    json_response,
    method_not_allowed,
    response_for_error,
    secret_matches,
)
from shared.logs import log_event
from shared.processor import Processor, ProcessorOptions
from shared.services.cluster import cluster
from shared.services.database import database
from shared.services.processor import processor_settings, storage


async def _run_cycle() -> dict[str, Any]:
    training_cluster = cluster()
    try:
        processor = Processor(
            database(),
            training_cluster,
            storage(),
            ProcessorOptions.from_settings(processor_settings()),
        )
        return (await processor.run_cycle()).as_dict()
    finally:
        await training_cluster.aclose()


def _authorized(request: Request) -> bool:
    settings = processor_settings()
    if settings.processor_trust_platform_auth:
        return True
    secret = settings.cron_secret
    return secret is not None and secret_matches(bearer_token(request), secret.get_secret_value())


@functions_framework.http
def process_training_jobs(request: Request) -> Response:
    if request.method != "POST":
        return method_not_allowed("POST")
    try:
        if not _authorized(request):
            return error_response(401, "unauthorized", "A valid cron secret is required.")
        summary = asyncio.run(_run_cycle())
    except LoraRunnerError as exc:
        return response_for_error(exc)
    log_event("processor cycle", **summary)
    return json_response({"success": True, "data": summary})
