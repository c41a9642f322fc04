"""cancel-job: cancels the caller's queued, initializing or running training job.

POST /<job id> with `Authorization: Bearer <Supabase user JWT>`. The job is cancelled in the
database at once (its running cost stops there: final cost, cost record and notification come
with it); then the GPU cluster is told. If the cluster cannot be reached in time the cancel still
stands, and the processor delivers it on a later cycle. 200 with the cancelled job; 409 when it
has already ended; 404 when there is no such job or it is not the caller's.
"""

from __future__ import annotations

import asyncio

import functions_framework
from flask import Request, Response

from shared.errors import ClusterError, ClusterRejected, DatabaseError
from shared.http import bearer_token, job_id_from, json_response, serve, set_up_function
from shared.logs import log_event
from shared.services.api import api_settings, token_verifier
from shared.services.cluster import cluster, cluster_settings
from shared.services.database import database

set_up_function()


@functions_framework.http
def cancel_job(request: Request) -> Response:
    return serve(request, ["POST"], _cancel_job, api_settings)


def _cancel_job(request: Request) -> Response:
    user = token_verifier().verify(bearer_token(request))
    job_id = job_id_from(request)
    # A missing cluster setting fails here, before anything has changed.
    cluster_settings()
    db = database()
    job = db.call("cancel_training_job", {"p_job_id": job_id}, as_user=user)
    if job["external_job_id"] and asyncio.run(_tell_cluster(job_id, job["external_job_id"])):
        try:
            db.call("record_cancels_delivered", {"p_deliveries": [{"job_id": job_id}]})
        except DatabaseError as exc:
            # The processor will deliver it again; the cluster takes a cancel twice.
            log_event(
                "cancel delivery not recorded", severity="WARNING", job_id=job_id, error=exc.message
            )
    return json_response({"success": True, "data": {"job": job}})


async def _tell_cluster(job_id: str, external_job_id: str) -> bool:
    """Whether the cluster has stopped the run; False leaves the cancel to the processor."""
    client = cluster()
    try:
        async with asyncio.timeout(api_settings().cancel_cluster_timeout_seconds):
            await client.cancel(external_job_id)
    except ClusterRejected as exc:
        if exc.status_code == 404:
            return True  # the cluster no longer knows the run: nothing is left to stop
        problem = exc.message
    except ClusterError as exc:
        problem = exc.message
    except TimeoutError:
        problem = "the cluster did not answer in time"
    else:
        return True
    finally:
        await client.aclose()
    log_event("cancel left to the processor", severity="WARNING", job_id=job_id, error=problem)
    return False
