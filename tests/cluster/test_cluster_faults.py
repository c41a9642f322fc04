"""The REST client retries what is transient, gives up after its attempts, and never retries a
rejection, against a simulator injecting faults over real HTTP.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from types import SimpleNamespace

import aiohttp
import pytest

from infra.local.processes import listening_socket
from shared.cluster import ClusterJobState, RestTrainingCluster
from shared.errors import ClusterBadResponse, ClusterRejected, ClusterUnavailable
from tests.cluster.support import (
    API_KEY,
    DatasetServer,
    RecordingSleep,
    SimulatorControl,
    training_request,
    wait_until_ended,
)

pytestmark = pytest.mark.anyio


async def completed_run(cluster: RestTrainingCluster, datasets: DatasetServer) -> str:
    submitted = await cluster.submit(training_request(datasets.jsonl(8)))
    await wait_until_ended(cluster, submitted.external_job_id)
    return submitted.external_job_id


async def test_latency_within_the_read_timeout_is_fine(
    cluster: RestTrainingCluster,
    datasets: DatasetServer,
    sim: SimulatorControl,
    sleeps: RecordingSleep,
) -> None:
    """A slow answer that arrives within the read timeout is used, with no retry."""
    run = await completed_run(cluster, datasets)
    sim.configure(latency=0.05)
    sim.inject({"endpoint": "status", "kind": "latency", "seconds": 0.1})

    started = time.monotonic()
    status = await cluster.status(run)

    assert status.status is ClusterJobState.COMPLETED
    assert time.monotonic() - started >= 0.15
    assert sleeps.delays == []


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_transient_server_errors_are_retried_until_success(
    cluster: RestTrainingCluster,
    datasets: DatasetServer,
    sim: SimulatorControl,
    sleeps: RecordingSleep,
    status: int,
) -> None:
    """5xx answers meaning "try again" are retried with growing, jittered backoff."""
    run = await completed_run(cluster, datasets)
    before = sim.requests()["status"]
    sim.inject({"endpoint": "status", "kind": "http_error", "status": status, "times": 2})

    result = await cluster.status(run)

    assert result.status is ClusterJobState.COMPLETED
    assert sim.requests()["status"] - before == 3
    # Defaults: 0.5 s doubling, plus up to 0.5 s of jitter.
    assert len(sleeps.delays) == 2
    assert 0.5 <= sleeps.delays[0] <= 1.0
    assert 1.0 <= sleeps.delays[1] <= 1.5


async def test_retried_submission_still_starts_one_run(
    cluster: RestTrainingCluster, datasets: DatasetServer, sim: SimulatorControl
) -> None:
    """A submission retried after a 503 is sent twice but starts exactly one run."""
    sim.inject({"endpoint": "submit", "kind": "http_error", "status": 503, "times": 1})
    request = training_request(datasets.jsonl(8))

    submitted = await cluster.submit(request)

    assert sim.submissions()[request.idempotency_key] == {
        "requests": 2,
        "jobs_created": 1,
        "external_job_id": submitted.external_job_id,
    }


async def test_rate_limit_waits_as_long_as_retry_after_says(
    cluster: RestTrainingCluster,
    datasets: DatasetServer,
    sim: SimulatorControl,
    sleeps: RecordingSleep,
) -> None:
    """A 429 is retried after exactly the Retry-After delay, not the usual backoff."""
    run = await completed_run(cluster, datasets)
    sim.inject({"endpoint": "status", "kind": "rate_limit", "retry_after": 7, "times": 2})

    await cluster.status(run)

    assert sleeps.delays == [7.0, 7.0]


async def test_retry_after_on_503_is_honoured_too(
    cluster: RestTrainingCluster,
    datasets: DatasetServer,
    sim: SimulatorControl,
    sleeps: RecordingSleep,
) -> None:
    """A 503 that says when to come back is retried after that delay."""
    run = await completed_run(cluster, datasets)
    sim.inject(
        {"endpoint": "status", "kind": "http_error", "status": 503, "retry_after": 3, "times": 1}
    )

    await cluster.status(run)

    assert sleeps.delays == [3.0]


async def test_retry_after_as_an_http_date_is_honoured(
    cluster: RestTrainingCluster,
    datasets: DatasetServer,
    sim: SimulatorControl,
    sleeps: RecordingSleep,
) -> None:
    """A Retry-After given as an HTTP date waits until that date."""
    run = await completed_run(cluster, datasets)
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=6), usegmt=True)
    sim.inject({"endpoint": "status", "kind": "rate_limit", "retry_after": when, "times": 1})

    await cluster.status(run)

    assert len(sleeps.delays) == 1
    assert 4.0 <= sleeps.delays[0] <= 6.0


async def test_long_retry_after_is_capped(
    datasets: DatasetServer, sim: SimulatorControl, sleeps: RecordingSleep
) -> None:
    """A Retry-After longer than retry_after_max waits retry_after_max, not the whole delay."""
    async with RestTrainingCluster(
        sim.base_url, API_KEY, retry_after_max=2.5, sleep=sleeps
    ) as cluster:
        run = await completed_run(cluster, datasets)
        sim.inject({"endpoint": "status", "kind": "rate_limit", "retry_after": 3600, "times": 1})

        await cluster.status(run)

    assert sleeps.delays == [2.5]


async def test_persistent_rate_limit_gives_up_after_max_attempts(
    cluster: RestTrainingCluster, datasets: DatasetServer, sim: SimulatorControl
) -> None:
    """A cluster that keeps throttling makes the call fail as unavailable, not rejected."""
    sim.inject({"endpoint": "submit", "kind": "rate_limit", "retry_after": 1})

    with pytest.raises(ClusterUnavailable, match="after 3 attempts; last error: HTTP 429"):
        await cluster.submit(training_request(datasets.jsonl(8)))

    assert sim.requests()["submit"] == 3


async def test_persistent_503_gives_up_with_the_attempts_and_last_cause(
    cluster: RestTrainingCluster, sim: SimulatorControl, sleeps: RecordingSleep
) -> None:
    """After max attempts of 503 the call raises ClusterUnavailable naming both."""
    sim.inject({"kind": "http_error", "status": 503, "message": "maintenance window"})

    with pytest.raises(ClusterUnavailable) as caught:
        await cluster.cancel("simjob-any")

    assert not isinstance(caught.value, ClusterBadResponse)
    assert caught.value.message == (
        "GPU cluster cancel failed after 3 attempts; "
        "last error: HTTP 503 Service Unavailable: maintenance window"
    )
    assert sim.requests()["cancel"] == 3
    assert len(sleeps.delays) == 2


async def test_hang_times_out_and_is_retried_until_success(
    cluster: RestTrainingCluster, datasets: DatasetServer, sim: SimulatorControl
) -> None:
    """A request that hangs past the read timeout is abandoned and retried."""
    run = await completed_run(cluster, datasets)
    sim.inject({"endpoint": "status", "kind": "hang", "seconds": 5, "times": 1})

    status = await cluster.status(run)

    assert status.status is ClusterJobState.COMPLETED


async def test_hang_on_every_attempt_ends_unavailable(
    cluster: RestTrainingCluster, sim: SimulatorControl
) -> None:
    """A cluster that never answers raises ClusterUnavailable after max attempts of timeouts."""
    sim.inject({"endpoint": "status", "kind": "hang", "seconds": 5})

    started = time.monotonic()
    with pytest.raises(ClusterUnavailable, match="after 3 attempts; last error: ReadTimeout"):
        await cluster.status("simjob-any")

    # Three read timeouts of 0.5 s, not the five seconds the cluster would hang.
    assert time.monotonic() - started < 4
    assert sim.requests()["status"] == 3


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"status": "runn', "not JSON"),
        ("<html>502 Bad Gateway</html>", "not JSON"),
        ('{"status": "exploded", "progress": 10}', "off contract: status"),
        ('{"status": "running", "progress": 140}', "off contract: progress"),
        ("[]", "off contract"),
    ],
)
async def test_malformed_status_raises_bad_response(
    cluster: RestTrainingCluster, sim: SimulatorControl, body: str, message: str
) -> None:
    """A status body that is not the contract's JSON raises ClusterBadResponse, not a crash."""
    sim.inject({"endpoint": "status", "kind": "malformed", "body": body, "times": 1})

    with pytest.raises(ClusterBadResponse, match=message):
        await cluster.status("simjob-any")

    assert sim.requests()["status"] == 1


async def test_malformed_submit_answer_raises_bad_response(
    cluster: RestTrainingCluster, datasets: DatasetServer, sim: SimulatorControl
) -> None:
    """A submit answer without an external job id raises ClusterBadResponse."""
    sim.inject({"endpoint": "submit", "kind": "malformed", "body": '{"status": "queued"}'})

    with pytest.raises(ClusterBadResponse, match="external_job_id: Field required"):
        await cluster.submit(training_request(datasets.jsonl(8)))


async def test_refused_connection_ends_unavailable(sleeps: RecordingSleep) -> None:
    """Nothing listening at the cluster's address raises ClusterUnavailable after max attempts."""
    with listening_socket() as sock:
        host, port = sock.getsockname()[:2]
    async with RestTrainingCluster(f"http://{host}:{port}", API_KEY, sleep=sleeps) as cluster:
        with pytest.raises(ClusterUnavailable, match="after 3 attempts; last error: ConnectError"):
            await cluster.status("simjob-any")

    assert len(sleeps.delays) == 2


async def test_dropped_connection_is_retried_until_success(
    cluster: RestTrainingCluster, datasets: DatasetServer, sim: SimulatorControl
) -> None:
    """A connection closed without an answer is retried like any transient failure."""
    run = await completed_run(cluster, datasets)
    sim.inject({"endpoint": "status", "kind": "refuse", "times": 2})

    status = await cluster.status(run)

    assert status.status is ClusterJobState.COMPLETED
    assert sim.faults() == []


async def test_connection_dropped_every_time_ends_unavailable(
    cluster: RestTrainingCluster, sim: SimulatorControl
) -> None:
    """A cluster that always hangs up raises ClusterUnavailable after max attempts."""
    sim.inject({"endpoint": "cancel", "kind": "refuse"})

    with pytest.raises(ClusterUnavailable, match="after 3 attempts"):
        await cluster.cancel("simjob-any")

    assert sim.requests()["cancel"] == 3


@pytest.mark.parametrize("status", [400, 404, 409, 422])
async def test_client_errors_are_rejected_without_retry(
    cluster: RestTrainingCluster,
    datasets: DatasetServer,
    sim: SimulatorControl,
    sleeps: RecordingSleep,
    status: int,
) -> None:
    """A 4xx raises ClusterRejected with the cluster's code and message after one request."""
    sim.inject(
        {
            "endpoint": "submit",
            "kind": "http_error",
            "status": status,
            "code": "unsupported_model",
            "message": "base model llama-1b is not offered",
        }
    )

    with pytest.raises(ClusterRejected) as caught:
        await cluster.submit(training_request(datasets.jsonl(8)))

    assert caught.value.message == "GPU cluster rejected submit: base model llama-1b is not offered"
    assert (caught.value.status_code, caught.value.code) == (status, "unsupported_model")
    assert sim.requests()["submit"] == 1
    assert sleeps.delays == []


async def test_wrong_api_key_is_unavailable_not_rejected(
    sim: SimulatorControl, datasets: DatasetServer, sleeps: RecordingSleep
) -> None:
    """A refused API key is the deployment's fault: ClusterUnavailable at once, no retry."""
    request = training_request(datasets.jsonl(8))
    async with RestTrainingCluster(sim.base_url, "wrong-key", sleep=sleeps) as cluster:
        with pytest.raises(ClusterUnavailable, match="refused the API key") as caught:
            await cluster.submit(request)

    assert not isinstance(caught.value, ClusterRejected)
    assert sim.submissions()[request.idempotency_key] == {
        "requests": 1,
        "jobs_created": 0,
        "external_job_id": None,
    }
    assert sleeps.delays == []


async def test_unexpected_5xx_is_unavailable_without_retry(
    cluster: RestTrainingCluster, sim: SimulatorControl, sleeps: RecordingSleep
) -> None:
    """A 5xx that does not mean "try again" (501) is unavailable at once."""
    sim.inject({"endpoint": "status", "kind": "http_error", "status": 501})

    with pytest.raises(ClusterUnavailable, match="HTTP 501 Not Implemented"):
        await cluster.status("simjob-any")

    assert sim.requests()["status"] == 1
    assert sleeps.delays == []


async def test_single_attempt_means_no_retry(sim: SimulatorControl, sleeps: RecordingSleep) -> None:
    """With max_attempts=1 a transient failure is reported at once."""
    sim.inject({"endpoint": "status", "kind": "http_error", "status": 503})
    async with RestTrainingCluster(sim.base_url, API_KEY, max_attempts=1, sleep=sleeps) as cluster:
        with pytest.raises(ClusterUnavailable, match="after 1 attempt; last error: HTTP 503"):
            await cluster.status("simjob-any")

    assert sleeps.delays == []


async def test_lent_session_is_used_and_left_open(
    sim: SimulatorControl, datasets: DatasetServer
) -> None:
    """A caller's aiohttp session carries the requests and is still open after aclose."""
    sent: list[str] = []

    async def record(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        sent.append(params.url.path)

    tracing = aiohttp.TraceConfig()
    tracing.on_request_start.append(record)
    async with aiohttp.ClientSession(trace_configs=[tracing]) as lent:
        cluster = RestTrainingCluster(sim.base_url, API_KEY, session=lent)
        submitted = await cluster.submit(training_request(datasets.jsonl(8)))
        await cluster.aclose()
        await cluster.status(submitted.external_job_id)

        assert not lent.closed
    assert sent == ["/training/submit", f"/training/status/{submitted.external_job_id}"]
