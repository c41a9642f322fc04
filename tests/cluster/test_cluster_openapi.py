"""openapi/cluster.yaml, the cluster simulator and the client's models describe one contract.

- schemathesis generates requests from the description (valid and invalid, with and without the
  key, following the links from a submission to its status and cancel) and checks every answer
  of the simulator against it;
- the description's schemas and the models of shared/cluster/models.py agree field by field:
  names, required fields, types, formats, defaults, and bounds, each bound probed on the model;
- the simulator's answers for runs in every state are exactly what the description names and
  validate into the client's models.
"""

from __future__ import annotations

import copy
import inspect
import json
import re
import subprocess
import sys
import time
import typing
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped]
from jsonschema_rs import Draft202012Validator
from pydantic import BaseModel, ValidationError

from shared.cluster import models
from shared.cluster.models import (
    MAX_HYPERPARAMETERS_BYTES,
    CancelResult,
    ClusterJobState,
    ClusterJobStatus,
    SubmitResult,
)
from tests.cluster.support import API_KEY, DatasetServer, SimulatorControl

REPO = Path(__file__).resolve().parents[2]
SPEC_PATH = REPO / "openapi" / "cluster.yaml"
SPEC: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
SCHEMAS: dict[str, Any] = SPEC["components"]["schemas"]
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    """The models an annotation holds (``X | None``, ``list[X]``...), and those theirs hold."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        yield annotation
        for info in annotation.model_fields.values():
            yield from _models_in(info.annotation)
    for argument in typing.get_args(annotation):
        yield from _models_in(argument)


# Every model of shared/cluster/models.py and every model their fields hold, by name: each has
# a schema of that name.
MODELS: dict[str, type[BaseModel]] = {
    model.__name__: model
    for name, value in vars(models).items()
    if inspect.isclass(value)
    and issubclass(value, BaseModel)
    and value.__module__ == models.__name__
    and not name.startswith("_")
    for model in _models_in(value)
}
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
BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength")
_OPERATION = re.compile(r"/training/(submit|status|cancel)\b")


# --- schemathesis against the simulator -----------------------------------------------------


def run_schemathesis(base_url: str, report: Path) -> None:
    """Run schemathesis over cluster.yaml against ``base_url``; fail on any failed check."""
    schemathesis = Path(sys.executable).with_name("schemathesis")
    assert schemathesis.exists(), "schemathesis is missing from the virtualenv: run `make install`"
    result = subprocess.run(
        [
            str(schemathesis),
            "run",
            str(SPEC_PATH),
            "--url",
            base_url,
            "--header",
            f"Authorization: Bearer {API_KEY}",
            "--checks",
            ",".join(CHECKS),
            # The stateful phase follows the links from a submission to its status and cancel,
            # so that real runs answer, not only unknown ids.
            "--phases",
            "examples,coverage,fuzzing,stateful",
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
    assert result.returncode == 0, result.stdout + result.stderr


def statuses_by_operation(report: Path) -> dict[str, set[int]]:
    """The status codes schemathesis recorded for each endpoint (submit, status, cancel)."""
    seen: dict[str, set[int]] = defaultdict(set)

    def walk(node: object) -> None:
        if isinstance(node, dict):
            request, response = node.get("request"), node.get("response")
            if isinstance(request, dict) and isinstance(response, dict):
                match = _OPERATION.search(str(request.get("uri") or request.get("url") or ""))
                if match and isinstance(response.get("status_code"), int):
                    seen[match.group(1)].add(response["status_code"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for line in report.read_text().splitlines():
        walk(json.loads(line))
    return seen


def test_simulator_conforms_to_cluster_yaml(sim: SimulatorControl, tmp_path: Path) -> None:
    """No generated request gets a 5xx or an answer cluster.yaml does not allow (status, content
    type, body, headers), invalid requests and missing keys are refused, and real runs answer
    status and cancel."""
    report = tmp_path / "cluster.ndjson"

    run_schemathesis(sim.base_url, report)

    seen = statuses_by_operation(report)
    assert {200, 201, 401, 405, 422} <= seen["submit"]
    assert {200, 400, 401, 404} <= seen["status"]
    assert {200, 401, 404} <= seen["cancel"]


# --- the description's schemas and the client's models --------------------------------------


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def facets(schema: dict[str, Any]) -> dict[str, Any]:
    """What a property schema says, in one shape for pydantic's schemas and the description's:
    its types (a referenced schema by name), format, items and which bounds it has."""
    branches = schema.get("anyOf") or schema.get("oneOf") or [schema]
    types: set[str] = set()
    described: dict[str, Any] = {"bounds": set()}
    for branch in branches:
        if "$ref" in branch:
            types.add(f"ref:{_ref_name(branch['$ref'])}")
            continue
        kinds = branch.get("type", [])
        types.update([kinds] if isinstance(kinds, str) else kinds)
        if "format" in branch:
            described["format"] = branch["format"]
        if "items" in branch:
            described["items"] = facets(branch["items"])
        if isinstance(branch.get("additionalProperties"), dict):
            described["values"] = facets(branch["additionalProperties"])
        described["bounds"] |= {key for key in BOUNDS if key in branch}
    described["types"] = types
    return described


def bound_values(schema: dict[str, Any]) -> dict[str, Any]:
    """The bounds of a property schema, wherever they sit (beside a null type or not)."""
    found: dict[str, Any] = {}
    for branch in schema.get("anyOf") or schema.get("oneOf") or [schema]:
        found |= {key: branch[key] for key in BOUNDS if key in branch}
    if "x-max-json-bytes" in schema:
        found["x-max-json-bytes"] = schema["x-max-json-bytes"]
    return found


def probes(key: str, bound: Any, kind: set[str]) -> tuple[Any, Any]:
    """A value right at a bound, which must be accepted, and one just past it, which must not."""
    step = 1 if "integer" in kind else 0.5
    if key == "minimum":
        return bound, bound - step
    if key == "maximum":
        return bound, bound + step
    if key == "minLength":
        return "x" * bound, "x" * (bound - 1)
    if key == "maxLength":
        return "x" * bound, "x" * (bound + 1)
    if key == "x-max-json-bytes":
        padding = len(json.dumps({"notes": ""}, separators=(",", ":")))
        return {"notes": "x" * (bound - padding)}, {"notes": "x" * (bound - padding + 1)}
    raise AssertionError(f"no probe for {key}")


def accepts(model: type[BaseModel], instance: dict[str, Any]) -> bool:
    try:
        model.model_validate(instance)
    except ValidationError:
        return False
    return True


def minimal(name: str) -> dict[str, Any]:
    """The required fields of the schema's example: a valid instance with nothing optional set,
    so that probing one field meets no rule that ties it to another."""
    example: dict[str, Any] = SCHEMAS[name]["example"]
    return {key: value for key, value in example.items() if key in SCHEMAS[name]["required"]}


def test_every_model_has_a_schema_of_its_name() -> None:
    """cluster.yaml has a schema for every model of shared/cluster/models.py and every model
    their fields hold, and nothing but them, the job states and the error shape."""
    assert set(SCHEMAS) == set(MODELS) | {"ClusterJobState", "Error"}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_schema_fields_agree_with_the_model(name: str) -> None:
    """A schema and its model have the same fields, required the same, of the same types and
    formats, with the same defaults and the same kinds of bounds, and refuse unnamed fields
    alike."""
    model = MODELS[name]
    generated = model.model_json_schema(mode="validation")
    schema = SCHEMAS[name]

    assert set(schema["properties"]) == set(model.model_fields)
    assert schema.get("additionalProperties", True) == generated.get("additionalProperties", True)
    assert set(schema.get("required", [])) == set(generated.get("required", []))
    for field, info in model.model_fields.items():
        described = schema["properties"][field]
        assert facets(described) == facets(generated["properties"][field]), field
        if info.is_required():
            assert "default" not in described, field
        else:
            assert described["default"] == info.get_default(call_default_factory=True), field


@pytest.mark.parametrize("name", sorted(MODELS))
def test_schema_bounds_hold_on_the_model(name: str) -> None:
    """Every bound of a schema is where the model draws it: the model accepts the bound itself
    and refuses one past it (validators included, such as total_epochs of at least 1)."""
    model = MODELS[name]
    base = minimal(name)
    assert accepts(model, base)
    for field, described in SCHEMAS[name]["properties"].items():
        kind = facets(described)["types"]
        for key, bound in bound_values(described).items():
            inside, outside = probes(key, bound, kind)
            assert accepts(model, {**base, field: inside}), (field, key, inside)
            assert not accepts(model, {**base, field: outside}), (field, key, outside)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_schema_formats_hold_on_the_model(name: str) -> None:
    """A date-time field of a schema refuses a time without its timezone on the model, and a
    uuid field refuses what is not a UUID."""
    model = MODELS[name]
    base = minimal(name)
    wrong = {"date-time": "2026-11-23T10:00:00", "uuid": "job-1"}
    for field, described in SCHEMAS[name]["properties"].items():
        form = facets(described).get("format")
        if form is not None:
            assert not accepts(model, {**base, field: wrong[form]}), (field, form)


def test_bounds_not_expressible_in_json_schema_are_named_alike() -> None:
    """The hyperparameters' size limit is the models' and the job states are the enum's."""
    hyperparameters = SCHEMAS["SubmitRequest"]["properties"]["hyperparameters"]

    assert hyperparameters["x-max-json-bytes"] == MAX_HYPERPARAMETERS_BYTES
    assert SCHEMAS["ClusterJobState"]["enum"] == [state.value for state in ClusterJobState]


def test_examples_are_valid_for_their_schema_and_model() -> None:
    """Every schema's example validates against the schema and into its model."""
    for name, schema in SCHEMAS.items():
        if "example" in schema:
            conform(name, schema["example"])
            if name in MODELS:
                MODELS[name].model_validate(schema["example"])


def test_operations_answer_with_the_models_the_client_reads() -> None:
    """The client posts a SubmitRequest and reads a SubmitResult, a ClusterJobStatus and a
    CancelResult: the description's operations take and answer the same."""
    paths = SPEC["paths"]

    def answer(path: str, method: str, status: str) -> str:
        content = paths[path][method]["responses"][status]["content"]
        return _ref_name(content["application/json"]["schema"]["$ref"])

    submit = paths["/training/submit"]["post"]
    request = submit["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert _ref_name(request) == "SubmitRequest"
    assert answer("/training/submit", "post", "200") == "SubmitResult"
    assert answer("/training/submit", "post", "201") == "SubmitResult"
    assert answer("/training/status/{external_job_id}", "get", "200") == "ClusterJobStatus"
    assert answer("/training/cancel/{external_job_id}", "post", "200") == "CancelResult"


# --- the simulator's answers ------------------------------------------------------------------


def _closed(node: Any) -> Any:
    """The schema with every object closed: no property it does not name."""
    if isinstance(node, dict):
        closed = {key: _closed(value) for key, value in node.items()}
        if "properties" in closed:
            closed.setdefault("additionalProperties", False)
        return closed
    if isinstance(node, list):
        return [_closed(value) for value in node]
    return node


_CLOSED_COMPONENTS = _closed(copy.deepcopy(SPEC["components"]))


def conform(name: str, body: Any) -> None:
    """Fail unless ``body`` is valid for the schema ``name``, naming nothing it does not name."""
    validator = Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": _CLOSED_COMPONENTS},
        validate_formats=True,
    )
    errors = [
        f"{list(error.instance_path)}: {error.message}" for error in validator.iter_errors(body)
    ]
    assert errors == [], f"{name}: {errors}"


class Recorder:
    """A client of the simulator that checks every contract answer as it arrives."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, headers=AUTH, timeout=5.0)
        self.states: set[str] = set()
        self.submit_answers: set[str] = set()
        self.cancel_answers: set[str] = set()

    def submit(self, dataset_url: str, key: str, created: bool = True) -> str:
        body = {
            "idempotency_key": key,
            "job_id": "00000000-0000-4000-8000-000000000b01",
            "dataset_url": dataset_url,
            "gpu_config": {"gpu_type": "A100", "gpu_count": 1},
        }
        answer = self.http.post("/training/submit", json=body)
        assert answer.status_code == (201 if created else 200)
        conform("SubmitResult", answer.json())
        result = SubmitResult.model_validate(answer.json())
        self.submit_answers.add(result.status)
        return result.external_job_id

    def status(self, external_job_id: str, since_step: int = 0) -> ClusterJobStatus:
        answer = self.http.get(
            f"/training/status/{external_job_id}", params={"since_step": since_step}
        )
        assert answer.status_code == 200
        conform("ClusterJobStatus", answer.json())
        status = ClusterJobStatus.model_validate(answer.json())
        self.states.add(status.status)
        return status

    def cancel(self, external_job_id: str) -> CancelResult:
        answer = self.http.post(f"/training/cancel/{external_job_id}")
        assert answer.status_code == 200
        conform("CancelResult", answer.json())
        result = CancelResult.model_validate(answer.json())
        assert result.external_job_id == external_job_id
        self.cancel_answers.add(result.status)
        return result

    def until_ended(self, external_job_id: str) -> ClusterJobStatus:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status = self.status(external_job_id)
            if status.status.is_terminal:
                return status
            time.sleep(0.02)
        raise AssertionError("the run did not end within 10 s")


@pytest.fixture
def recorder(sim: SimulatorControl) -> Iterator[Recorder]:
    recorder = Recorder(sim.base_url)
    yield recorder
    recorder.http.close()


def test_simulator_answers_are_the_clients_models(
    recorder: Recorder, sim: SimulatorControl, datasets: DatasetServer
) -> None:
    """In every state a run can be in, the simulator's submit, status and cancel answers hold
    exactly the fields cluster.yaml names and validate into SubmitResult, ClusterJobStatus and
    CancelResult, self-consistency rules included."""
    sim.configure(init_seconds=30)
    waiting = recorder.submit(datasets.jsonl(8), "initializing")
    time.sleep(0.1)
    recorder.status(waiting)
    assert recorder.cancel(waiting).status is ClusterJobState.CANCELLED
    recorder.status(waiting)

    sim.configure(init_seconds=0, steps_per_second=20)
    running = recorder.submit(datasets.jsonl(800), "running")
    time.sleep(0.3)
    assert recorder.status(running).status is ClusterJobState.RUNNING
    recorder.status(running, since_step=2)
    recorder.cancel(running)
    assert recorder.cancel(running).status is ClusterJobState.CANCELLED

    sim.configure(steps_per_second=250)
    url = datasets.jsonl(40)
    completed = recorder.submit(url, "completed")
    assert recorder.submit(url, "completed", created=False) == completed
    assert recorder.until_ended(completed).status is ClusterJobState.COMPLETED
    recorder.status(completed, since_step=3)
    assert recorder.cancel(completed).status is ClusterJobState.COMPLETED

    missing = recorder.submit(datasets.publish(b"gone", status=404), "missing")
    assert recorder.until_ended(missing).status is ClusterJobState.FAILED
    crashing = recorder.submit(datasets.jsonl(400), "crashing")
    sim.fail_at_step(crashing, 5, "CUDA out of memory")
    assert recorder.until_ended(crashing).history
    assert recorder.cancel(crashing).status is ClusterJobState.FAILED

    # A run is queued only until its download starts, too briefly to be sure to see.
    assert recorder.states >= set(ClusterJobState) - {ClusterJobState.QUEUED}
    assert ClusterJobState.QUEUED in recorder.submit_answers
    assert recorder.cancel_answers == {"cancelled", "completed", "failed"}


def test_simulator_holds_the_hyperparameters_size_limit(
    sim: SimulatorControl, datasets: DatasetServer
) -> None:
    """Hyperparameters of exactly the description's x-max-json-bytes are accepted by the
    simulator and one byte more is refused with 422."""
    limit = SCHEMAS["SubmitRequest"]["properties"]["hyperparameters"]["x-max-json-bytes"]
    inside, outside = probes("x-max-json-bytes", limit, {"object"})
    body = {
        "job_id": "00000000-0000-4000-8000-000000000b01",
        "dataset_url": datasets.jsonl(8),
        "gpu_config": {"gpu_type": "A100", "gpu_count": 1},
    }
    with httpx.Client(base_url=sim.base_url, headers=AUTH) as http:
        accepted = http.post(
            "/training/submit", json={**body, "idempotency_key": "in", "hyperparameters": inside}
        )
        refused = http.post(
            "/training/submit", json={**body, "idempotency_key": "out", "hyperparameters": outside}
        )

    assert accepted.status_code == 201
    assert refused.status_code == 422
    conform("Error", refused.json())
