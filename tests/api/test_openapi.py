"""The OpenAPI descriptions in openapi/ hold for the functions as served by functions-framework:
schemathesis generates requests from each description (valid and invalid ones, with and without
the token) and checks every answer against it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from infra.local.postgres import SEED
from tests.api.conftest import REPO, Api
from tests.api.tokens import SigningKey, user_claims

# The demo user and job of supabase/seed.sql: the job id is the one the descriptions give as
# their example, so generated requests reach a real job, not only 404s.
DEMO_USER = "00000000-0000-4000-8000-00000000d3e0"
DEMO_JOB = "00000000-0000-4000-8000-000000000b01"
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
    "ignored_auth",
    "unsupported_method",
]


@pytest.fixture(scope="module")
def demo_token(api_admin: psycopg.Connection, es256_key: SigningKey) -> str:
    api_admin.execute(SEED.read_text())  # type: ignore[call-overload]
    api_admin.execute(
        "insert into metrics_points (job_id, step, training_loss, throughput)"
        " select %s, s, 2.0 / s, 1500 from generate_series(1, 1200) s on conflict do nothing",
        (DEMO_JOB,),
    )
    return es256_key.sign(user_claims(DEMO_USER))


def run_schemathesis(spec: str, base_url: str, token: str, report: Path) -> str:
    """Run schemathesis over `spec` against `base_url`; fail the test on any failed check."""
    schemathesis = Path(sys.executable).with_name("schemathesis")
    assert schemathesis.exists(), "schemathesis is missing from the virtualenv: run `make install`"
    result = subprocess.run(
        [
            str(schemathesis),
            "run",
            str(REPO / "openapi" / spec),
            "--url",
            base_url,
            "--header",
            f"Authorization: Bearer {token}",
            "--checks",
            ",".join(CHECKS),
            "--phases",
            "examples,coverage,fuzzing",
            # Small enough to keep the run to seconds; the coverage phase adds the boundary
            # and invalid values of every parameter on top.
            "--max-examples",
            "30",
            "--seed",
            "20261123",
            "--workers",
            "2",
            "--generation-database",
            "none",
            "--request-timeout",
            "10",
            "--no-color",
            # A spec whose server URL ends in the function's name makes it suggest adding that
            # path to the local URL: wrong here, and noise.
            "--warnings",
            "off",
            "--report",
            "ndjson",
            "--report-ndjson-path",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=report.parent,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def statuses_seen(report: Path) -> set[int]:
    """The status codes of every response schemathesis recorded."""
    seen: set[int] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("status_code"), int):
                seen.add(node["status_code"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for line in report.read_text().splitlines():
        walk(json.loads(line))
    return seen


def test_get_job_conforms_to_its_description(api: Api, demo_token: str, tmp_path: Path) -> None:
    """No generated request to get-job gets a 5xx or an answer its description does not allow
    (status, content type, body schema, headers); the real job's 200 is among them."""
    report = tmp_path / "get-job.ndjson"
    run_schemathesis("get-job.yaml", api.get_job_url, demo_token, report)

    assert {200, 400, 401} <= statuses_seen(report)


def test_cancel_job_conforms_to_its_description(api: Api, demo_token: str, tmp_path: Path) -> None:
    """No generated request to cancel-job gets a 5xx or an answer its description does not
    allow; the demo job is cancelled once (200) and refused after (409)."""
    report = tmp_path / "cancel-job.ndjson"
    run_schemathesis("cancel-job.yaml", api.cancel_job_url, demo_token, report)

    assert {200, 400, 401, 409} <= statuses_seen(report)
