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

from shared.errors import NotAuthenticated
from shared.http import bearer_token, json_response, secret_matches, serve, set_up_function
from shared.logs import log_event
from shared.processor import Processor
from shared.services.cluster import cluster
from shared.services.database import database
from shared.services.processor import processor_settings, storage

set_up_function()


async def _run_cycle() -> dict[str, Any]:
    training_cluster = cluster()
    try:
        processor = Processor(database(), training_cluster, storage(), processor_settings())
        return (await processor.run_cycle()).as_dict()
    finally:
        await training_cluster.aclose()


def _authorize(request: Request) -> None:
    settings = processor_settings()
    if settings.processor_trust_platform_auth:
        return
    secret = settings.cron_secret
    token = bearer_token(request)
    if secret is None or not secret_matches(token, secret.get_secret_value()):
        raise NotAuthenticated("A valid cron secret is required.", token_given=token is not None)


def _process(request: Request) -> Response:
    _authorize(request)
    summary = asyncio.run(_run_cycle())
    log_event("processor cycle", **summary)
    return json_response({"success": True, "data": summary})


@functions_framework.http
def process_training_jobs(request: Request) -> Response:
    return serve(request, ["POST"], _process)
