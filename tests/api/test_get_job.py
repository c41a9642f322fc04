"""get-job over HTTP: who may read a job, what its answer holds, parameters, ETags and CORS."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg
import pytest

from shared.models import JobStatus
from tests.api.conftest import ORIGIN, Api, Caller
from tests.api.support import BOOKKEEPING, JOB_FIELDS, assert_error
from tests.api.tokens import (
    JwksServer,
    SigningKey,
    hmac_forged_with_public_key,
    hs256_token,
    unsigned_token,
    user_claims,
)
from tests.factories import make_job


def add_points(conn: psycopg.Connection, job_id: uuid.UUID, first: int, last: int) -> None:
    conn.execute(
        "insert into metrics_points (job_id, step, epoch, training_loss, validation_loss,"
        " learning_rate, throughput, gpu_utilization, gpu_memory)"
        " select %s, s, s / 100, 2.0 / (1 + s), 2.1 / (1 + s), 0.0002, 1500, 91.5, 38.2"
        " from generate_series(%s::int, %s::int) s",
        (job_id, first, last),
    )


def test_owner_gets_job_with_dataset_metrics_and_costs(
    api: Api, api_admin: psycopg.Connection, owner: Caller
) -> None:
    """The owner's finished job comes back whole: the job without the processor's bookkeeping,
    its dataset, its points in step order and its one compute cost record."""
    job_id = make_job(api_admin, owner.user_id, status=JobStatus.COMPLETED)
    add_points(api_admin, job_id, 1, 40)
    api_admin.execute(
        "update training_jobs set lease_owner = gen_random_uuid(), attempts = 2,"
        " next_poll_at = now() where id = %s",
        (job_id,),
    )

    response = api.get(job_id, owner.token)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["success"] is True
    data = body["data"]
    assert set(data) == {"job", "dataset", "metrics", "costs", "queue", "adapter"}
    assert data["queue"] is None  # only a queued job waits in line
    assert data["adapter"] is None  # its run stored no adapter
    job = data["job"]
    assert set(job) == JOB_FIELDS
    assert not BOOKKEEPING & set(job)
    assert job["id"] == str(job_id)
    assert job["status"] == "completed"
    assert job["progress"] == 100
    assert data["dataset"]["id"] == job["dataset_id"]
    assert data["dataset"]["name"] == "Support replies"
    assert [point["step"] for point in data["metrics"]] == list(range(1, 41))
    assert data["metrics"][0]["training_loss"] == pytest.approx(1.0)
    assert data["metrics"][0]["gpu_utilization"] == pytest.approx(91.5)
    [cost] = data["costs"]
    assert cost["cost_type"] == "training_compute"
    assert cost["amount"] == job["final_cost"]


def test_processor_verdicts_and_run_times_are_null_until_set_then_shown(
    api: Api, api_admin: psycopg.Connection, owner: Caller
) -> None:
    """`stalled_since`, `lost_contact_since`, `run_started_at` and `run_ended_at` are null on a
    fresh running job and come back as the processor wrote them once set, under a new ETag."""
    job_id = make_job(api_admin, owner.user_id, status=JobStatus.RUNNING)
    verdicts = ("stalled_since", "lost_contact_since", "run_started_at", "run_ended_at")

    fresh = api.get(job_id, owner.token)

    assert fresh.status_code == 200, fresh.text
    assert {key: fresh.json()["data"]["job"][key] for key in verdicts} == dict.fromkeys(verdicts)

    api_admin.execute(
        "update training_jobs set run_started_at = '2026-11-23T10:00:00Z',"
        " run_ended_at = '2026-11-23T11:30:00Z', stalled_since = '2026-11-23T11:00:00Z',"
        " lost_contact_since = '2026-11-23T11:15:00Z' where id = %s",
        (job_id,),
    )

    response = api.get(job_id, owner.token, headers={"If-None-Match": fresh.headers["etag"]})

    assert response.status_code == 200, response.text
    job = response.json()["data"]["job"]
    assert {key: datetime.fromisoformat(job[key]) for key in verdicts} == {
        "stalled_since": datetime(2026, 11, 23, 11, 0, tzinfo=UTC),
        "lost_contact_since": datetime(2026, 11, 23, 11, 15, tzinfo=UTC),
        "run_started_at": datetime(2026, 11, 23, 10, 0, tzinfo=UTC),
        "run_ended_at": datetime(2026, 11, 23, 11, 30, tzinfo=UTC),
    }
    assert job["status"] == "running"


def test_job_id_may_come_in_the_query(
    api: Api, api_admin: psycopg.Connection, owner: Caller
) -> None:
    """`?job_id=` is the same as the path; two different ids are refused."""
    job_id = make_job(api_admin, owner.user_id)
    headers = {"Authorization": f"Bearer {owner.token}"}

    response = api.http.get(api.get_job_url + "/", params={"job_id": str(job_id)}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["job"]["id"] == str(job_id)

    both = api.http.get(
        f"{api.get_job_url}/{job_id}", params={"job_id": str(uuid.uuid4())}, headers=headers
    )
    assert both.status_code == 400
    assert_error(both.json(), "bad_request")


def test_another_users_job_is_indistinguishable_from_a_missing_one(
    api: Api, api_admin: psycopg.Connection, owner: Caller, stranger: Caller
) -> None:
    """Someone else's job is a 404 with the very same body as a job that does not exist."""
    job_id = make_job(api_admin, owner.user_id, status=JobStatus.RUNNING)

    theirs = api.get(job_id, stranger.token)
    missing = api.get(uuid.uuid4(), stranger.token)

    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == missing.json()
    assert_error(theirs.json(), "not_found")


@pytest.mark.parametrize(
    "key_name",
    ["es256_key", "rs256_key", "legacy secret"],
)
def test_every_kind_of_project_token_is_accepted(
    api: Api,
    api_admin: psycopg.Connection,
    owner: Caller,
    key_name: str,
    request: pytest.FixtureRequest,
) -> None:
    """Tokens signed with the project's ES256 or RS256 key (from its JWKS) or with the legacy
    HS256 secret all let the owner in."""
    job_id = make_job(api_admin, owner.user_id)
    claims = user_claims(owner.user_id)
    if key_name == "legacy secret":
        token = hs256_token(claims)
    else:
        key: SigningKey = request.getfixturevalue(key_name)
        token = key.sign(claims)

    response = api.get(job_id, token)

    assert response.status_code == 200, response.text


TokenMaker = Callable[[uuid.UUID, SigningKey, SigningKey], str]

BAD_TOKENS: dict[str, TokenMaker] = {
    "wrong-key-same-kid": lambda user, es, rs: SigningKey.es256().sign(
        user_claims(user), kid=es.kid
    ),
    "unknown-kid": lambda user, es, rs: SigningKey.es256().sign(user_claims(user)),
    "expired": lambda user, es, rs: es.sign(user_claims(user, expires_in=-120)),
    "wrong-audience": lambda user, es, rs: es.sign(user_claims(user, aud="service")),
    "no-exp": lambda user, es, rs: es.sign(
        {k: v for k, v in user_claims(user).items() if k != "exp"}
    ),
    "no-sub": lambda user, es, rs: es.sign(
        {k: v for k, v in user_claims(user).items() if k != "sub"}
    ),
    "sub-not-a-uuid": lambda user, es, rs: es.sign(user_claims("not-a-uuid")),
    "service-role": lambda user, es, rs: es.sign(user_claims(user, role="service_role")),
    "alg-none": lambda user, es, rs: unsigned_token(user_claims(user)),
    "hs256-with-ec-public-key": lambda user, es, rs: hmac_forged_with_public_key(
        user_claims(user), es
    ),
    "hs256-with-rsa-public-key": lambda user, es, rs: hmac_forged_with_public_key(
        user_claims(user), rs
    ),
    "hs256-wrong-secret": lambda user, es, rs: hs256_token(
        user_claims(user), secret="another-projects-secret-0123456789abcdef"
    ),
    "rs256-header-on-ec-key": lambda user, es, rs: rs.sign(user_claims(user), kid=es.kid),
    "tampered-payload": lambda user, es, rs: _tampered(es.sign(user_claims(user))),
    "garbage": lambda user, es, rs: "not.a.jwt",
}


def _tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    return f"{header}.{payload[:-2]}AA.{signature}"


@pytest.mark.parametrize("make_token", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_bad_tokens_get_401_and_no_data(
    api: Api,
    api_admin: psycopg.Connection,
    owner: Caller,
    es256_key: SigningKey,
    rs256_key: SigningKey,
    make_token: TokenMaker,
) -> None:
    """An expired, forged, misdirected or malformed token for the owner's own job is a 401 that
    says the token is invalid, and carries nothing of the job."""
    job_id = make_job(api_admin, owner.user_id)

    response = api.get(job_id, make_token(owner.user_id, es256_key, rs256_key))

    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert_error(response.json(), "unauthorized")
    assert str(job_id) not in response.text


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Basic dXNlcjpwYXNz", "token abc"],
    ids=["absent", "empty", "bearer-alone", "basic", "other-scheme"],
)
def test_missing_or_malformed_authorization_is_401(
    api: Api, api_admin: psycopg.Connection, owner: Caller, authorization: str | None
) -> None:
    """Without a bearer token the answer is a 401 that asks for one (RFC 6750: no error code)."""
    job_id = make_job(api_admin, owner.user_id)
    headers = {} if authorization is None else {"Authorization": authorization}

    response = api.get(job_id, headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert_error(response.json(), "unauthorized")


def test_expired_token_says_the_session_expired(
    api: Api, api_admin: psycopg.Connection, owner: Caller, es256_key: SigningKey
) -> None:
    """An expired token is told apart from a forged one, so the app can refresh the session."""
    job_id = make_job(api_admin, owner.user_id)

    response = api.get(job_id, es256_key.sign(user_claims(owner.user_id, expires_in=-120)))

    assert response.json()["error"]["message"] == "Your session has expired; sign in again."


@pytest.mark.parametrize("form", ["urn:uuid:{}", "{{{}}}"], ids=["urn", "braces"])
def test_token_naming_its_user_in_another_uuid_form_is_401_not_500(
    api: Api, api_admin: psycopg.Connection, owner: Caller, es256_key: SigningKey, form: str
) -> None:
    """A validly signed token whose `sub` is the owner's id as `urn:uuid:...` or in braces is
    refused as a token that names no user (401), instead of failing in the database (500)."""
    job_id = make_job(api_admin, owner.user_id)
    token = es256_key.sign(user_claims(owner.user_id, sub=form.format(owner.user_id)))

    response = api.get(job_id, token)

    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert_error(response.json(), "unauthorized")
    assert "sub" in response.json()["error"]["message"]


def test_rotated_key_is_fetched_from_the_jwks(
    api: Api,
    api_admin: psycopg.Connection,
    owner: Caller,
    jwks: JwksServer,
    es256_key: SigningKey,
    rs256_key: SigningKey,
) -> None:
    """A token signed with a key the project has just published makes the function fetch the
    JWKS again and accept it; before it is published the same token is refused."""
    job_id = make_job(api_admin, owner.user_id)
    new_key = SigningKey.es256()
    token = new_key.sign(user_claims(owner.user_id))
    try:
        assert api.get(job_id, token).status_code == 401
        fetches = jwks.fetches
        jwks.publish(es256_key, rs256_key, new_key)

        response = api.get(job_id, token)

        assert response.status_code == 200, response.text
        assert jwks.fetches == fetches + 1
        assert api.get(job_id, token).status_code == 200
        assert jwks.fetches == fetches + 1, "a known key is served from the cache"
    finally:
        jwks.publish(es256_key, rs256_key)


def test_unreachable_jwks_is_503_while_the_legacy_secret_still_works(
    api: Api, api_admin: psycopg.Connection, owner: Caller, jwks: JwksServer
) -> None:
    """When the JWKS cannot be fetched a token that needs it gets 503 (not "sign in again"),
    while HS256 tokens, checked against the secret alone, still get in."""
    job_id = make_job(api_admin, owner.user_id)
    jwks.fail = True
    try:
        response = api.get(job_id, SigningKey.es256().sign(user_claims(owner.user_id)))
        legacy = api.get(job_id, hs256_token(user_claims(owner.user_id)))
    finally:
        jwks.fail = False

    assert response.status_code == 503, response.text
    assert_error(response.json(), "auth_unavailable")
    assert legacy.status_code == 200, legacy.text


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"max_points": "1"}, "max_points"),
        ({"max_points": "5001"}, "max_points"),
        ({"max_points": "many"}, "max_points"),
        ({"max_points": "-5"}, "max_points"),
        ({"max_points": "2.5"}, "max_points"),
        ({"max_points": ""}, "max_points"),
        ({"since_step": "-1"}, "since_step"),
        ({"since_step": "later"}, "since_step"),
        ({"since_step": "2147483648"}, "since_step"),
    ],
)
def test_bad_parameters_are_400(
    api: Api, api_admin: psycopg.Connection, owner: Caller, params: dict[str, str], name: str
) -> None:
    """A parameter outside its range is a 400 whose message names it and its bounds."""
    job_id = make_job(api_admin, owner.user_id)

    response = api.get(job_id, owner.token, params=params)

    assert response.status_code == 400
    assert_error(response.json(), "bad_request")
    assert name in response.json()["error"]["message"]


@pytest.mark.parametrize("path", ["not-a-uuid", "1234", "3f0c1a2b-0000-4000-8000-00000000000", ""])
def test_malformed_job_id_is_400(api: Api, owner: Caller, path: str) -> None:
    """Anything but a UUID where the job id goes is a 400, before any database call."""
    response = api.http.get(
        f"{api.get_job_url}/{path}", headers={"Authorization": f"Bearer {owner.token}"}
    )

    assert response.status_code == 400
    assert_error(response.json(), "bad_request")


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_only_get_is_allowed(api: Api, owner: Caller, method: str) -> None:
    """Other methods are 405 with the Allow header and the JSON error shape."""
    response = api.http.request(
        method,
        f"{api.get_job_url}/{uuid.uuid4()}",
        headers={"Authorization": f"Bearer {owner.token}"},
    )

    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, OPTIONS"
    assert_error(response.json(), "method_not_allowed")


def test_etag_gives_304_until_something_changes(
    api: Api, api_admin: psycopg.Connection, owner: Caller
) -> None:
    """The answer's ETag sent back as If-None-Match gives an empty 304 (also in a list or
    weak); once a new point arrives the same ETag gets a 200 with a new one."""
    job_id = make_job(api_admin, owner.user_id, status=JobStatus.RUNNING)
    add_points(api_admin, job_id, 1, 10)
    first = api.get(job_id, owner.token)
    etag = first.headers["etag"]

    for if_none_match in (etag, f'"other", {etag}', f"W/{etag}", "*"):
        again = api.get(job_id, owner.token, headers={"If-None-Match": if_none_match})
        assert again.status_code == 304, if_none_match
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert again.headers["cache-control"] == "no-store"

    add_points(api_admin, job_id, 11, 11)
    changed = api.get(job_id, owner.token, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert changed.json()["data"]["metrics"][-1]["step"] == 11


def test_etag_does_not_help_another_user(
    api: Api, api_admin: psycopg.Connection, owner: Caller, stranger: Caller
) -> None:
    """Knowing the owner's ETag gets a stranger nothing: still a 404."""
    job_id = make_job(api_admin, owner.user_id)
    etag = api.get(job_id, owner.token).headers["etag"]

    response = api.get(job_id, stranger.token, headers={"If-None-Match": etag})

    assert response.status_code == 404


def test_since_step_returns_exactly_the_newer_points(
    api: Api, api_admin: psycopg.Connection, owner: Caller
) -> None:
    """since_step=N returns the points after step N and no other; past the last step, none."""
    job_id = make_job(api_admin, owner.user_id, status=JobStatus.RUNNING)
    add_points(api_admin, job_id, 1, 50)

    def steps(**params: str) -> list[int]:
        response = api.get(job_id, owner.token, params=params)
        assert response.status_code == 200, response.text
        return [point["step"] for point in response.json()["data"]["metrics"]]

    assert steps(since_step="30") == list(range(31, 51))
    assert steps(since_step="0") == list(range(1, 51))
    assert steps(since_step="50") == []
    assert steps(since_step="2147483647") == []


def test_cors_preflight_for_the_monitor_origin(api: Api) -> None:
    """The configured origin's preflight is answered with what a browser needs to send the
    token and If-None-Match; another origin's gets no permission."""
    url = f"{api.get_job_url}/{uuid.uuid4()}"
    request_headers = {
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization, if-none-match",
    }

    allowed = api.http.options(url, headers={"Origin": ORIGIN, **request_headers})
    other = api.http.options(url, headers={"Origin": "https://evil.example", **request_headers})

    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "GET" in allowed.headers["access-control-allow-methods"]
    allowed_headers = allowed.headers["access-control-allow-headers"].split(", ")
    assert {"authorization", "content-type", "if-none-match"} <= set(allowed_headers)
    assert int(allowed.headers["access-control-max-age"]) > 0
    assert allowed.headers["vary"] == "Origin"
    assert other.status_code == 204
    assert "access-control-allow-origin" not in other.headers
    assert "access-control-allow-methods" not in other.headers


def test_cors_headers_on_answers_and_errors(
    api: Api, api_admin: psycopg.Connection, owner: Caller
) -> None:
    """Answers to the monitor's origin, errors included, let its script read them and the ETag;
    answers to other origins do not, and every answer varies by Origin."""
    job_id = make_job(api_admin, owner.user_id)

    ok = api.get(job_id, owner.token, headers={"Origin": ORIGIN})
    unauthorized = api.get(job_id, headers={"Origin": ORIGIN})
    other = api.get(job_id, owner.token, headers={"Origin": "https://evil.example"})

    for response in (ok, unauthorized):
        assert response.headers["access-control-allow-origin"] == ORIGIN
        assert response.headers["access-control-expose-headers"] == "ETag"
        assert response.headers["vary"] == "Origin"
    assert other.status_code == 200
    assert "access-control-allow-origin" not in other.headers
    assert other.headers["vary"] == "Origin"


@pytest.mark.parametrize("job_id", [str(uuid.uuid4()), "not-a-uuid"])
def test_the_token_is_checked_before_the_id(api: Api, job_id: str) -> None:
    """An anonymous caller learns nothing about ids, well-formed or not: always 401 first."""
    response = api.http.get(f"{api.get_job_url}/{job_id}")

    assert response.status_code == 401
