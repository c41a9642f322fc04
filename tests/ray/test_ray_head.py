"""The local Ray head: loopback only, token required, fake GPUs."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from tests.ray.conftest import TOKEN


def test_every_process_listens_on_loopback_only(ray_head: Any, ray_api: httpx.Client) -> None:
    """Every socket any process of the head listens on, a running job's included, is bound to a
    loopback address."""
    submission_id = f"loopback-{uuid.uuid4().hex[:8]}"
    ray_api.post("/api/jobs/", json={"submission_id": submission_id, "entrypoint": "sleep 30"})
    try:
        deadline = time.monotonic() + 60
        while ray_api.get(f"/api/jobs/{submission_id}").json()["status"] != "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.25)
        listeners = ray_head.listeners()
    finally:
        ray_api.post(f"/api/jobs/{submission_id}/stop")
    processes = {listener.process for listener in listeners}
    # The dashboard, the GCS, the raylet, the agents and the job's supervisor all listen.
    assert {"gcs_server", "raylet"} <= processes, processes
    # Its title is the method it runs: ray::JobSupervisor or ray::JobSupervisor.run.
    assert any(name.startswith("ray::JobSupervisor") for name in processes), processes
    assert any(
        listener.port == int(ray_head.dashboard_url.rsplit(":", 1)[1]) for listener in listeners
    )
    exposed = [listener for listener in listeners if not listener.loopback]
    assert exposed == [], exposed


def test_jobs_api_requires_the_token(ray_head: Any) -> None:
    """Ray's token authentication refuses a request without the bearer token or with a wrong one."""
    with httpx.Client(base_url=ray_head.dashboard_url, timeout=10.0) as client:
        assert client.get("/api/jobs/").status_code == 401
        wrong = client.get("/api/jobs/", headers={"Authorization": "Bearer wrong"})
        assert wrong.status_code == 403
        right = client.get("/api/jobs/", headers={"Authorization": f"Bearer {TOKEN}"})
        assert right.status_code == 200


def test_head_offers_the_fake_gpus(ray_head: Any, ray_api: httpx.Client) -> None:
    """Ray sees the two GPUs and the A100 accelerator resource the head claims, and no H100."""
    nodes = ray_api.get("/api/v0/nodes", params={"detail": "true"}).json()["data"]["result"]
    [node] = nodes["result"]
    assert node["node_ip"] == "127.0.0.1"
    assert node["resources_total"]["GPU"] == 2
    assert node["resources_total"]["accelerator_type:A100"] == 1
    assert "accelerator_type:H100" not in node["resources_total"]
