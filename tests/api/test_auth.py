"""The token verifier on its own, against a JWKS over real HTTP: keys, rotation, refresh limits
and what an unreachable JWKS means; and the settings that configure it and CORS."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import jwt
import pytest

from shared.auth import TokenVerifier
from shared.config import ApiSettings, AuthSettings, load
from shared.errors import AuthUnavailable, ConfigurationError, NotAuthenticated
from tests.api.tokens import JWT_SECRET, JwksServer, SigningKey, hs256_token, user_claims


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.es256()


@pytest.fixture
def jwks_server(key: SigningKey) -> Iterator[JwksServer]:
    server = JwksServer(key)
    yield server
    server.close()


def test_verified_claims_become_the_callers_context(
    jwks_server: JwksServer, key: SigningKey
) -> None:
    """A good token gives the caller's claims, untouched, and the token itself (PostgREST
    checks it again on its side)."""
    user_id = uuid.uuid4()
    claims = user_claims(user_id, email="ada@example.com")
    token = key.sign(claims)

    user = TokenVerifier(jwks_url=jwks_server.url).verify(token)

    assert user.user_id == str(user_id)
    assert dict(user.claims) == claims
    assert user.token == token


def test_keys_are_cached_between_tokens(jwks_server: JwksServer, key: SigningKey) -> None:
    """Many tokens signed with a known key cost one JWKS fetch."""
    verifier = TokenVerifier(jwks_url=jwks_server.url)

    for _ in range(5):
        verifier.verify(key.sign(user_claims(uuid.uuid4())))

    assert jwks_server.fetches == 1


def test_unknown_key_ids_refresh_the_keys_at_most_once_per_cooldown(
    jwks_server: JwksServer, key: SigningKey
) -> None:
    """A burst of tokens with unknown key ids costs one extra fetch, not one each; a key
    published meanwhile is found once the cooldown has passed."""
    verifier = TokenVerifier(jwks_url=jwks_server.url, jwks_refresh_cooldown_seconds=0.5)
    verifier.verify(key.sign(user_claims(uuid.uuid4())))
    rotated = SigningKey.es256()
    token = rotated.sign(user_claims(uuid.uuid4()))

    for _ in range(10):
        with pytest.raises(NotAuthenticated):
            verifier.verify(SigningKey.es256().sign(user_claims(uuid.uuid4())))
    jwks_server.publish(key, rotated)
    with pytest.raises(NotAuthenticated):
        verifier.verify(token)
    assert jwks_server.fetches == 1, "within the cooldown of the first fetch: no refresh"

    time.sleep(0.6)
    assert verifier.verify(token).token == token
    assert jwks_server.fetches == 2


@pytest.mark.parametrize("failure", ["status-500", "not-json", "closed"])
def test_unreachable_jwks_is_unavailable_not_unauthenticated(
    jwks_server: JwksServer, key: SigningKey, failure: str
) -> None:
    """A JWKS that answers 500, answers something that is not JSON, or is not there at all is
    the auth service's problem: AuthUnavailable, never a claim that the token is bad."""
    if failure == "status-500":
        jwks_server.fail = True
    elif failure == "not-json":
        jwks_server.serve(b"<html>maintenance</html>")
    else:
        jwks_server.close()

    with pytest.raises(AuthUnavailable):
        TokenVerifier(jwks_url=jwks_server.url, jwks_timeout_seconds=2).verify(
            key.sign(user_claims(uuid.uuid4()))
        )


def test_an_algorithm_without_its_key_source_is_refused(
    jwks_server: JwksServer, key: SigningKey
) -> None:
    """Without a secret HS256 tokens are refused; without a JWKS asymmetric ones are; and
    algorithms outside ES256, RS256 and HS256 are refused even when correctly signed."""
    claims = user_claims(uuid.uuid4())
    with pytest.raises(NotAuthenticated):
        TokenVerifier(jwks_url=jwks_server.url).verify(hs256_token(claims))
    with pytest.raises(NotAuthenticated):
        TokenVerifier(jwt_secret=JWT_SECRET).verify(key.sign(claims))
    long_secret = JWT_SECRET * 2
    with pytest.raises(NotAuthenticated):
        TokenVerifier(jwt_secret=long_secret).verify(
            jwt.encode(claims, long_secret, algorithm="HS512")
        )
    assert jwks_server.fetches == 0


def test_missing_token_is_not_called_invalid() -> None:
    """No token at all is a NotAuthenticated that knows no token was given (no error code in
    WWW-Authenticate), unlike a bad one."""
    verifier = TokenVerifier(jwt_secret=JWT_SECRET)
    with pytest.raises(NotAuthenticated) as missing:
        verifier.verify(None)
    with pytest.raises(NotAuthenticated) as bad:
        verifier.verify("x.y.z")
    assert missing.value.token_given is False
    assert bad.value.token_given is True


ISSUER = "https://abcd.supabase.co/auth/v1"


@pytest.mark.parametrize(
    ("iss", "accepted"),
    [(ISSUER, True), ("https://other.supabase.co/auth/v1", False), (None, False)],
    ids=["right-iss", "wrong-iss", "missing-iss"],
)
def test_issuer_is_checked_when_known(
    jwks_server: JwksServer, key: SigningKey, iss: str | None, accepted: bool
) -> None:
    """With the project's issuer known, a token from that Auth server is accepted; one issued
    elsewhere, or naming no issuer, is refused with a message that says so, whichever way it is
    signed."""
    verifier = TokenVerifier(jwks_url=jwks_server.url, jwt_secret=JWT_SECRET, issuer=ISSUER)
    claims = user_claims(uuid.uuid4(), iss=iss)
    if iss is None:
        del claims["iss"]

    for token in (key.sign(claims), hs256_token(claims)):
        if accepted:
            assert verifier.verify(token).claims["iss"] == ISSUER
        else:
            with pytest.raises(NotAuthenticated, match="not issued by this project") as caught:
                verifier.verify(token)
            assert caught.value.token_given is True


def test_issuer_comes_from_the_supabase_url(
    monkeypatch: pytest.MonkeyPatch, jwks_server: JwksServer
) -> None:
    """SUPABASE_URL (with or without a trailing slash) makes Supabase's issuer, <url>/auth/v1,
    the one a token must name, while without it any `iss`, or none, passes."""
    elsewhere = user_claims(uuid.uuid4(), iss="https://other.supabase.co/auth/v1")
    nowhere = user_claims(uuid.uuid4())
    del nowhere["iss"]
    monkeypatch.setenv("SUPABASE_JWKS_URL", jwks_server.url)
    monkeypatch.setenv("SUPABASE_JWT_SECRET", JWT_SECRET)
    unknown = TokenVerifier.from_settings(load(AuthSettings))
    assert unknown.verify(hs256_token(elsewhere)).claims["iss"] == elsewhere["iss"]
    assert "iss" not in unknown.verify(hs256_token(nowhere)).claims

    monkeypatch.setenv("SUPABASE_URL", "https://abcd.supabase.co/")
    known = TokenVerifier.from_settings(load(AuthSettings))

    assert known.verify(hs256_token(user_claims(uuid.uuid4(), iss=ISSUER)))
    for claims in (elsewhere, nowhere, user_claims(uuid.uuid4(), iss=ISSUER + "/")):
        with pytest.raises(NotAuthenticated, match="not issued by this project"):
            known.verify(hs256_token(claims))


@pytest.mark.parametrize(
    "sub",
    [
        "urn:uuid:{u}",
        "{{{u}}}",
        "{hex}",
        " {u}",
        "{u}\n",
        "not-a-uuid",
    ],
    ids=["urn", "braces", "no-hyphens", "leading-space", "trailing-newline", "text"],
)
def test_sub_must_be_a_uuid_in_its_usual_form(key: SigningKey, sub: str) -> None:
    """`sub` must be a UUID written 8-4-4-4-12, the form the database reads: the other forms
    Python's uuid module takes are refused with a message about the token's user, not passed on
    to fail in the database."""
    user_id = uuid.uuid4()
    verifier = TokenVerifier(jwt_secret=JWT_SECRET)
    token = hs256_token(user_claims(user_id, sub=sub.format(u=user_id, hex=user_id.hex)))

    with pytest.raises(NotAuthenticated, match="does not name a user") as caught:
        verifier.verify(token)
    assert caught.value.token_given is True


# --- settings ------------------------------------------------------------------------------------


def test_jwks_url_is_derived_from_the_supabase_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """SUPABASE_URL alone is enough: the JWKS is Supabase's well-known one under it."""
    monkeypatch.setenv("SUPABASE_URL", "https://abcd.supabase.co/")
    settings = load(AuthSettings)
    assert settings.jwks_url == "https://abcd.supabase.co/auth/v1/.well-known/jwks.json"
    assert settings.jwt_secret is None


def test_explicit_jwks_url_and_secret_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """SUPABASE_JWKS_URL wins over the derived one; the secret is kept out of the repr."""
    monkeypatch.setenv("SUPABASE_URL", "https://abcd.supabase.co")
    monkeypatch.setenv("SUPABASE_JWKS_URL", "https://keys.example.com/jwks.json")
    monkeypatch.setenv("SUPABASE_JWT_SECRET", JWT_SECRET)
    settings = load(AuthSettings)
    assert settings.jwks_url == "https://keys.example.com/jwks.json"
    assert settings.jwt_secret == JWT_SECRET
    assert JWT_SECRET not in repr(settings)


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({}, ["SUPABASE_JWKS_URL", "SUPABASE_URL", "SUPABASE_JWT_SECRET"]),
        ({"SUPABASE_JWT_SECRET": "short"}, ["SUPABASE_JWT_SECRET", "at least 32"]),
        ({"SUPABASE_JWKS_URL": "file:///etc/passwd"}, ["SUPABASE_JWKS_URL", "http(s)"]),
    ],
    ids=["nothing", "short-secret", "not-a-web-url"],
)
def test_auth_settings_say_what_is_missing_or_wrong(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], said: list[str]
) -> None:
    """No way to verify tokens, a guessable secret or a JWKS that is not a web URL fails at start
    with a message that names the settings concerned."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as caught:
        load(AuthSettings)
    for words in said:
        assert words in str(caught.value)


def test_allowed_origins_are_parsed_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """ALLOWED_ORIGINS is a comma-separated list, normalised; empty means no CORS; a value that
    is not an origin is named in the error."""
    assert load(ApiSettings).origins == frozenset()
    monkeypatch.setenv(
        "ALLOWED_ORIGINS", " https://App.example.com/ , http://localhost:5173,http://[::1]:8080"
    )
    assert load(ApiSettings).origins == {
        "https://app.example.com",
        "http://localhost:5173",
        "http://[::1]:8080",
    }
    monkeypatch.setenv("ALLOWED_ORIGINS", "https://app.example.com/path")
    with pytest.raises(ConfigurationError, match="ALLOWED_ORIGINS"):
        load(ApiSettings)
