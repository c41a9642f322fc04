"""The cluster simulator itself: its key check, its curves, its control API and its process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from statistics import mean
from typing import Any

import anyio
import httpx
import pytest

from infra.local.processes import listening_socket, start_cluster_simulator, start_server
from tests.cluster.support import API_KEY, STEPS_PER_SECOND, DatasetServer, SimulatorControl

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def http(sim: SimulatorControl) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.base_url, headers=AUTH, timeout=5.0) as client:
        yield client


def job_id(name: str) -> str:
    """The same UUID for the same name, so a test can submit one job twice."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"simulator-test/{name}"))


def submission(dataset_url: str, key: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "idempotency_key": key,
        "dataset_url": dataset_url,
        "hyperparameters": {},
        "gpu_config": {"gpu_type": "A100", "gpu_count": 1},
        "job_id": job_id(key),
    }
    return {**body, **overrides}


def submit(http: httpx.Client, body: dict[str, Any]) -> str:
    """Submit a run; its external id."""
    answer = http.post("/training/submit", json=body)
    assert answer.status_code == 201, answer.text
    external_job_id: str = answer.json()["external_job_id"]
    return external_job_id


def poll_to_end(http: httpx.Client, external_job_id: str) -> dict[str, Any]:
    """Poll a run until it ends; its last status."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        status: dict[str, Any] = http.get(f"/training/status/{external_job_id}").json()
        if status["status"] in ("completed", "failed", "cancelled"):
            return status
        time.sleep(0.02)
    raise AssertionError("the run did not end within 15 s")


def run_to_end(http: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    """Submit a run and poll it until it ends; its last status."""
    return poll_to_end(http, submit(http, body))


def moment(value: str | None) -> datetime:
    """A timestamp of the contract, which must be there and carry its timezone."""
    assert value is not None
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None
    return parsed


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {API_KEY}"}],
)
def test_contract_endpoints_require_the_bearer_key(
    sim: SimulatorControl, headers: dict[str, str]
) -> None:
    """Without the Bearer API key every contract endpoint answers 401 in the contract's shape."""
    with httpx.Client(base_url=sim.base_url, headers=headers) as client:
        answers = [
            client.post("/training/submit", json={}),
            client.get("/training/status/simjob-x"),
            client.post("/training/cancel/simjob-x"),
        ]

    for answer in answers:
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"] == "Bearer"
        assert answer.json()["error"]["code"] == "unauthorized"


def test_new_submission_is_201_and_a_repeat_is_200(
    http: httpx.Client, datasets: DatasetServer
) -> None:
    """A new idempotency key creates a run (201); the same key again finds it (200)."""
    body = submission(datasets.jsonl(8), "key-201")

    created = http.post("/training/submit", json=body)
    repeated = http.post("/training/submit", json=body)

    assert created.status_code == 201
    assert created.json()["status"] == "queued"
    assert repeated.status_code == 200
    assert repeated.json()["external_job_id"] == created.json()["external_job_id"]


@pytest.mark.parametrize(
    "field", ["idempotency_key", "job_id", "dataset_url", "gpu_config", "gpu_config.gpu_count"]
)
def test_submission_missing_a_field_is_422(http: httpx.Client, field: str) -> None:
    """A submission without a required field is refused with 422 naming the field."""
    body = submission("http://127.0.0.1:9/d.jsonl", "k")
    if field == "gpu_config.gpu_count":
        del body["gpu_config"]["gpu_count"]
    else:
        del body[field]

    answer = http.post("/training/submit", json=body)

    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "invalid_request"
    assert field in answer.json()["error"]["message"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"gpu_config": {"gpu_type": "A100", "gpu_count": 0}}, "gpu_config.gpu_count"),
        ({"gpu_config": {"gpu_type": "A100", "gpu_count": 65}}, "gpu_config.gpu_count"),
        ({"gpu_config": {"gpu_type": "A100", "gpu_count": 1.5}}, "gpu_config.gpu_count"),
        ({"gpu_config": {"gpu_type": "A100", "gpu_count": "2"}}, "gpu_config.gpu_count"),
        ({"gpu_config": {"gpu_type": "", "gpu_count": 1}}, "gpu_config.gpu_type"),
        ({"job_id": "job-1"}, "job_id"),
        ({"idempotency_key": "k" * 256}, "idempotency_key"),
        ({"hyperparameters": {"notes": "x" * 65536}}, "hyperparameters"),
        ({"hyperparameters": ["epochs", 2]}, "hyperparameters"),
        ({"artifacts": {"location": ""}}, "artifacts.location"),
        ({"artifacts": {"location": "s3://b/j/", "bucket": "b"}}, "artifacts.bucket"),
        (
            {"artifacts": {"location": "s3://b/j/", "upload_urls": {"a": 1}}},
            "artifacts.upload_urls.a",
        ),
    ],
)
def test_submission_off_contract_is_422(
    http: httpx.Client, overrides: dict[str, Any], field: str
) -> None:
    """A submission whose field breaks the contract's type or bounds is refused with 422 naming
    the field, and starts no run."""
    answer = http.post("/training/submit", json=submission("http://x", "k", **overrides))

    assert answer.status_code == 422
    assert answer.json()["error"]["message"].startswith(f"{field}: ")
    assert http.get("/_sim/health").json()["jobs"] == 0


def test_run_given_artifact_targets_reports_its_adapter_there(
    http: httpx.Client, datasets: DatasetServer
) -> None:
    """A completed run whose submission named an artifact location reports its adapter under it."""
    artifacts = {
        "location": "s3://lora-artifacts/user-1/job-1/",
        "upload_urls": {"adapter/adapter_model.safetensors": "http://127.0.0.1:9/put?signed"},
    }

    final = run_to_end(http, submission(datasets.jsonl(8), "targets", artifacts=artifacts))

    assert final["artifact_uri"] == "s3://lora-artifacts/user-1/job-1/adapter/"


def test_hyperparameters_of_exactly_64_kib_are_accepted(
    http: httpx.Client, datasets: DatasetServer
) -> None:
    """Hyperparameters whose compact JSON takes exactly 64 KiB are within the contract."""
    hyperparameters = {"notes": ""}
    hyperparameters["notes"] = "x" * (
        65536 - len(json.dumps(hyperparameters, separators=(",", ":")))
    )

    answer = http.post(
        "/training/submit",
        json=submission(datasets.jsonl(8), "k", hyperparameters=hyperparameters),
    )

    assert answer.status_code == 201


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hyperparameters": {"epochs": 1.5}}, "epochs must be a whole number"),
        ({"hyperparameters": {"learning_rate": "fast"}}, "learning_rate must be a number"),
        ({"hyperparameters": {"lr_scheduler": "step"}}, "lr_scheduler must be one of"),
    ],
)
def test_untrainable_submission_is_400(
    http: httpx.Client, datasets: DatasetServer, overrides: dict[str, Any], message: str
) -> None:
    """A submission the simulator cannot train is refused with 400 and the reason."""
    answer = http.post("/training/submit", json=submission(datasets.jsonl(8), "k", **overrides))

    assert answer.status_code == 400
    assert answer.json()["error"]["message"].startswith(message)


@pytest.mark.parametrize("since_step", ["-1", "three", "+1", " 1", "1_0", "1.0", "9" * 5000])
def test_invalid_since_step_is_400(
    http: httpx.Client, datasets: DatasetServer, since_step: str
) -> None:
    """since_step must be a non-negative integer."""
    run = http.post("/training/submit", json=submission(datasets.jsonl(8), "k")).json()

    answer = http.get(
        f"/training/status/{run['external_job_id']}", params={"since_step": since_step}
    )

    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_since_step"


def test_curves_look_like_a_real_lora_run(http: httpx.Client, datasets: DatasetServer) -> None:
    """Loss decays, validation is evaluated every N steps, the LR warms up then decays, and
    throughput, GPU utilization and memory stay in their ranges."""
    hyperparameters = {"epochs": 3, "batch_size": 8, "learning_rate": 3e-4, "warmup_ratio": 0.1}
    final = run_to_end(
        http, submission(datasets.jsonl(320), "curves", hyperparameters=hyperparameters)
    )
    points = final["history"]
    losses = [point["training_loss"] for point in points]
    rates = [point["learning_rate"] for point in points]

    assert final["total_steps"] == len(points) == 120
    assert mean(losses[-10:]) < 0.5 * mean(losses[:10])
    evaluated = [point["step"] for point in points if point["validation_loss"] is not None]
    assert evaluated == list(range(20, 121, 20))
    assert rates[11] == pytest.approx(3e-4)
    assert rates[:12] == sorted(rates[:12])
    assert rates[11:] == sorted(rates[11:], reverse=True)
    assert rates[-1] < 3e-6
    assert [point["epoch"] for point in points[39:41]] == [1, 2]
    assert all(2500 < point["throughput"] < 3700 for point in points)
    assert all(80 <= point["gpu_utilization"] <= 99 for point in points)
    assert all(0 < point["gpu_memory"] <= 80 for point in points)
    times = [datetime.fromisoformat(point["recorded_at"]) for point in points]
    assert times[1] - times[0] == timedelta(seconds=1 / STEPS_PER_SECOND)


def test_gpu_type_and_count_shape_throughput_and_memory(
    http: httpx.Client, datasets: DatasetServer
) -> None:
    """Bigger and more GPUs train faster; memory in use fits the GPU's memory."""
    url = datasets.jsonl(80)
    runs = {
        gpus: run_to_end(
            http,
            submission(url, f"gpu-{gpus}", gpu_config={"gpu_type": gpus[0], "gpu_count": gpus[1]}),
        )["history"]
        for gpus in [("T4", 1), ("H100", 1), ("H100", 4)]
    }

    speed = {gpus: mean(p["throughput"] for p in points) for gpus, points in runs.items()}
    assert speed[("T4", 1)] < speed[("H100", 1)] < speed[("H100", 4)] < 4 * speed[("H100", 1)]
    assert max(p["gpu_memory"] for p in runs[("T4", 1)]) <= 16
    assert min(p["gpu_memory"] for p in runs[("H100", 1)]) > 16


def test_curves_are_deterministic_per_job(http: httpx.Client, datasets: DatasetServer) -> None:
    """Two runs of the same job id produce the same metrics, whenever they are polled."""
    url = datasets.jsonl(40)
    first_id = submit(http, submission(url, "first", job_id=job_id("same-job")))
    second_id = submit(http, submission(url, "second", job_id=job_id("same-job")))
    first, second = poll_to_end(http, first_id), poll_to_end(http, second_id)
    other = run_to_end(http, submission(url, "other", job_id=job_id("other-job")))

    def without_time(status: dict[str, Any]) -> list[dict[str, Any]]:
        return [{k: v for k, v in p.items() if k != "recorded_at"} for p in status["history"]]

    assert first_id != second_id
    assert without_time(first) == without_time(second)
    assert without_time(first) != without_time(other)


def test_fault_rules_are_used_up_and_can_be_cleared(sim: SimulatorControl) -> None:
    """A counted fault disappears once used; DELETE clears every fault."""
    sim.inject(
        {"endpoint": "status", "kind": "http_error", "status": 502, "times": 1},
        {"kind": "latency", "seconds": 0.01},
    )
    with httpx.Client(base_url=sim.base_url, headers=AUTH) as client:
        assert client.get("/training/status/simjob-x").status_code == 502
        assert client.get("/training/status/simjob-x").status_code == 404

    assert [(fault["kind"], fault["remaining"]) for fault in sim.faults()] == [("latency", None)]
    httpx.delete(sim.base_url + "/_sim/faults").raise_for_status()
    assert sim.faults() == []


def test_invalid_fault_rule_is_refused(sim: SimulatorControl) -> None:
    """A fault rule of an unknown kind is refused with 400 and nothing is injected."""
    answer = httpx.post(sim.base_url + "/_sim/faults", json=[{"kind": "gremlins"}])

    assert answer.status_code == 400
    assert sim.faults() == []


def test_fail_at_a_step_already_passed_is_refused(
    http: httpx.Client, datasets: DatasetServer
) -> None:
    """A run cannot be made to fail at a step it has already finished."""
    external_job_id = submit(http, submission(datasets.jsonl(8), "done"))
    poll_to_end(http, external_job_id)

    answer = http.post(f"/_sim/jobs/{external_job_id}/fail_at_step", json={"step": 1})

    assert answer.status_code == 409


def test_reset_forgets_runs_counts_and_pace(
    http: httpx.Client, sim: SimulatorControl, datasets: DatasetServer
) -> None:
    """Reset forgets every run and count and returns to the startup pace."""
    sim.configure(steps_per_second=1, latency=0.01)
    run = http.post("/training/submit", json=submission(datasets.jsonl(8), "k")).json()

    sim.reset()

    assert http.get(f"/training/status/{run['external_job_id']}").status_code == 404
    assert sim.submissions() == {}
    assert sim.requests() == {"submit": 0, "status": 1, "cancel": 0}
    pacing = httpx.get(sim.base_url + "/_sim/config").json()
    assert pacing == {"steps_per_second": STEPS_PER_SECOND, "init_seconds": 0.0, "latency": 0.0}


def test_latency_does_not_serialize_requests(
    http: httpx.Client, sim: SimulatorControl, datasets: DatasetServer
) -> None:
    """100 concurrent polls with 500 ms of latency each finish together, not one by one."""
    run = http.post("/training/submit", json=submission(datasets.jsonl(8), "k")).json()
    sim.configure(latency=0.5)
    codes: list[int] = []

    async def poll_all() -> None:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=sim.base_url, headers=AUTH, limits=limits) as client:

            async def poll() -> None:
                answer = await client.get(f"/training/status/{run['external_job_id']}")
                codes.append(answer.status_code)

            async with anyio.create_task_group() as group:
                for _ in range(100):
                    group.start_soon(poll)

    started = time.monotonic()
    anyio.run(poll_all)

    assert codes == [200] * 100
    # One after another they would take 50 s.
    assert time.monotonic() - started < 5


def test_simulator_process_starts_and_stops() -> None:
    """The startup helper serves a healthy simulator on a free port and stops it for good."""
    with start_cluster_simulator(api_key="another-key") as server:
        assert httpx.get(server.base_url + "/_sim/health").json()["status"] == "ok"

    assert server.process.returncode is not None
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.base_url + "/_sim/health")


def test_simulator_refuses_to_start_without_an_api_key() -> None:
    """Started without a key, the simulator exits with a message instead of serving openly."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CLUSTER_SIM_API_KEY", "GPU_CLUSTER_API_KEY")
    }

    result = subprocess.run(
        [sys.executable, "-m", "infra.local.cluster_simulator", "--port", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )

    assert result.returncode == 2
    assert "an API key is required" in result.stderr


STEP = timedelta(seconds=1 / STEPS_PER_SECOND)


def test_run_reports_when_it_started_and_ended(
    http: httpx.Client, sim: SimulatorControl, datasets: DatasetServer
) -> None:
    """A run that starts and completes between two polls reports both times: it started training
    one step before its first point and ended with its last, after its initialization delay."""
    sim.configure(init_seconds=0.2)
    submitted = datetime.now(UTC)
    external_job_id = submit(http, submission(datasets.jsonl(40), "times"))
    before = http.get(f"/training/status/{external_job_id}").json()
    time.sleep(0.5)

    after = http.get(f"/training/status/{external_job_id}").json()
    polled = datetime.now(UTC)

    assert before["status"] in ("queued", "initializing")
    assert (before["started_at"], before["ended_at"]) == (None, None)
    assert after["status"] == "completed"
    started, ended = moment(after["started_at"]), moment(after["ended_at"])
    points = after["history"]
    assert started == moment(points[0]["recorded_at"]) - STEP
    assert ended == moment(points[-1]["recorded_at"])
    assert ended - started == after["total_steps"] * STEP
    assert submitted + timedelta(seconds=0.2) <= started < ended <= polled


def test_running_run_reports_its_start_and_no_end(
    http: httpx.Client, sim: SimulatorControl, datasets: DatasetServer
) -> None:
    """A running run reports when it started training and no end yet."""
    sim.configure(steps_per_second=20)
    external_job_id = submit(http, submission(datasets.jsonl(800), "running"))
    time.sleep(0.3)

    status = http.get(f"/training/status/{external_job_id}").json()

    assert status["status"] == "running"
    assert moment(status["started_at"]) <= datetime.now(UTC)
    assert status["ended_at"] is None


def test_cancelled_run_ended_when_the_cancel_arrived(
    http: httpx.Client, sim: SimulatorControl, datasets: DatasetServer
) -> None:
    """A run cancelled while training ended at the cancel: after its last point, within one
    step time of it, and a second cancel changes nothing."""
    sim.configure(steps_per_second=20)
    external_job_id = submit(http, submission(datasets.jsonl(800), "cancelled"))
    time.sleep(0.3)

    sent = datetime.now(UTC)
    answer = http.post(f"/training/cancel/{external_job_id}").json()
    answered = datetime.now(UTC)
    again = http.post(f"/training/cancel/{external_job_id}").json()
    status = http.get(f"/training/status/{external_job_id}").json()

    assert answer == again == {"external_job_id": external_job_id, "status": "cancelled"}
    ended = moment(status["ended_at"])
    assert sent <= ended <= answered
    last_point = moment(status["history"][-1]["recorded_at"])
    assert last_point <= ended < last_point + timedelta(seconds=1 / 20)
    assert moment(status["started_at"]) < last_point


def test_run_cancelled_before_it_trained_has_no_start(
    http: httpx.Client, sim: SimulatorControl, datasets: DatasetServer
) -> None:
    """A run cancelled while it initializes ended at the cancel and never started training."""
    sim.configure(init_seconds=30)
    external_job_id = submit(http, submission(datasets.jsonl(8), "early"))
    time.sleep(0.1)

    sent = datetime.now(UTC)
    http.post(f"/training/cancel/{external_job_id}").raise_for_status()
    answered = datetime.now(UTC)
    status = http.get(f"/training/status/{external_job_id}").json()

    assert status["status"] == "cancelled"
    assert status["started_at"] is None
    assert sent <= moment(status["ended_at"]) <= answered


def test_run_failing_at_a_step_ended_one_step_after_its_last_point(
    http: httpx.Client, sim: SimulatorControl, datasets: DatasetServer
) -> None:
    """A run made to fail at step N ended when step N would have finished, which is when it
    first reads failed; cancelling it afterwards answers failed."""
    sim.configure(init_seconds=0.2)
    external_job_id = submit(http, submission(datasets.jsonl(80), "fails"))
    sim.fail_at_step(external_job_id, 7, "CUDA out of memory")

    status = poll_to_end(http, external_job_id)
    answer = http.post(f"/training/cancel/{external_job_id}").json()

    assert status["status"] == "failed"
    points = status["history"]
    assert moment(status["started_at"]) == moment(points[0]["recorded_at"]) - STEP
    assert moment(status["ended_at"]) == moment(points[-1]["recorded_at"]) + STEP
    assert answer == {"external_job_id": external_job_id, "status": "failed"}


def test_run_whose_dataset_cannot_be_downloaded_ended_without_starting(
    http: httpx.Client, datasets: DatasetServer
) -> None:
    """A run failed by its download ended when the download failed and never started."""
    submitted = datetime.now(UTC)
    external_job_id = submit(http, submission(datasets.publish(b"gone", status=404), "missing"))

    status = poll_to_end(http, external_job_id)

    assert status["status"] == "failed"
    assert status["started_at"] is None
    assert submitted <= moment(status["ended_at"]) <= datetime.now(UTC)


def test_cancelling_a_completed_run_answers_completed(
    http: httpx.Client, datasets: DatasetServer
) -> None:
    """A cancel that arrives after the run completed answers completed and changes nothing."""
    external_job_id = submit(http, submission(datasets.jsonl(8), "done"))
    completed = poll_to_end(http, external_job_id)

    answer = http.post(f"/training/cancel/{external_job_id}")

    assert answer.status_code == 200
    assert answer.json() == {"external_job_id": external_job_id, "status": "completed"}
    assert http.get(f"/training/status/{external_job_id}").json() == completed


def test_405_names_the_allowed_methods(http: httpx.Client) -> None:
    """A method an endpoint does not take gets 405 in the contract's shape, with Allow."""
    answer = http.delete("/training/submit")

    assert answer.status_code == 405
    assert answer.headers["Allow"] == "POST"
    assert answer.json()["error"]["code"] == "method_not_allowed"


def test_many_slow_downloads_all_complete(datasets: DatasetServer) -> None:
    """500 runs whose datasets take 2 s each to arrive all complete: runs beyond the simulator's
    250 downloads at once wait their turn, longer than the download timeout, instead of failing
    (a connection pool that timed out its waiters once failed most of them)."""
    runs = 500
    # Every read of every download is well within the download timeout of 1 s; only waiting
    # for a turn behind hundreds of other downloads takes longer than that.
    argv = [
        sys.executable,
        "-m",
        "infra.local.cluster_simulator",
        "--fd",
        "{fd}",
        "--steps-per-second",
        str(STEPS_PER_SECOND),
        "--init-seconds",
        "0",
        "--download-timeout",
        "1",
        "--max-downloads",
        "250",
    ]
    url = datasets.jsonl(8, delay=2.0)
    started = time.monotonic()
    with start_server(
        "slow-download simulator",
        argv,
        sock=listening_socket(),
        health_path="/_sim/health",
        env={"CLUSTER_SIM_API_KEY": API_KEY},
    ) as server:

        async def submit_all() -> list[str]:
            limits = httpx.Limits(max_connections=20)
            async with httpx.AsyncClient(
                base_url=server.base_url, headers=AUTH, limits=limits, timeout=10
            ) as client:

                async def submit_one(number: int) -> str:
                    body = submission(url, f"slow-{number}")
                    answer = await client.post("/training/submit", json=body)
                    assert answer.status_code == 201, answer.text
                    external_job_id: str = answer.json()["external_job_id"]
                    return external_job_id

                return list(await asyncio.gather(*(submit_one(n) for n in range(runs))))

        ids = asyncio.run(submit_all())
        # Runs end roughly in the order they were submitted, so waiting for each in turn polls
        # each of them about once.
        with httpx.Client(base_url=server.base_url, headers=AUTH, timeout=10) as client:
            finals = [poll_to_end(client, external_job_id) for external_job_id in ids]

    failures = [final["error"] for final in finals if final["status"] != "completed"]
    assert failures == []
    assert time.monotonic() - started < 20
