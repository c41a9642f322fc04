"""Verifying the Supabase user JWTs that get-job and cancel-job are called with
(docs/architecture.md, "The HTTP API").

A token is accepted only when it is signed by the project: with one of its asymmetric keys
(ES256 or RS256, looked up by `kid` in the project's JWKS) or with the legacy shared secret
(HS256). The algorithm comes from a fixed list and picks the key source, never the other way
round: an HS256 token is checked against the secret alone, so one "signed" with a public key
fails, and `none` is refused. It must be meant for signed-in users (`aud` and `role` both
`authenticated`), unexpired, name its user (`sub`, a UUID written the usual 8-4-4-4-12 way, which
is how the database reads it), and, when the project's URL is known, come from its Auth server
(`iss` is `<SUPABASE_URL>/auth/v1`).

The verified claims then go to the database as the caller's (:class:`~shared.db.UserContext`),
where RLS decides what the caller may see and do.
"""

from __future__ import annotations

import re
from typing import Any

import jwt
from jwt import PyJWKClient, PyJWKClientConnectionError

from shared.config import AuthSettings
from shared.db import UserContext
from shared.errors import AuthUnavailable, NotAuthenticated

AUDIENCE = "authenticated"
ASYMMETRIC_ALGORITHMS = frozenset({"ES256", "RS256"})
LEGACY_ALGORITHM = "HS256"
# Clock skew tolerated between Supabase Auth and this function.
LEEWAY_SECONDS = 10

_MISSING = "Sign in to continue: send your access token as `Authorization: Bearer <token>`."
_INVALID = "Your access token is not valid; sign in again."
_EXPIRED = "Your session has expired; sign in again."
_NO_USER = "Your access token does not name a user (its `sub` must be a UUID); sign in again."
_OTHER_ISSUER = "Your access token was not issued by this project's sign-in; sign in again."

# The canonical text form only: Python's uuid.UUID also takes braces, a `urn:uuid:` prefix or no
# hyphens, which the database's cast of `sub` (auth.uid()) does not all accept.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def issuer_for(supabase_url: str) -> str:
    """The `iss` that the project's Auth server writes in its tokens."""
    return supabase_url.rstrip("/") + "/auth/v1"


class TokenVerifier:
    """Checks access tokens against the project's JWKS and/or its legacy JWT secret.

    Keys fetched from the JWKS are cached for `jwks_cache_seconds`; a token whose `kid` is not
    among them (the project rotated its keys) makes the verifier fetch the JWKS again, at most
    once per `jwks_refresh_cooldown_seconds`. Thread-safe: one verifier serves every request of a
    process. With `issuer`, a token must carry exactly that `iss`; without, `iss` is not checked.
    """

    def __init__(
        self,
        *,
        jwks_url: str | None = None,
        jwt_secret: str | None = None,
        issuer: str | None = None,
        jwks_cache_seconds: float = 600.0,
        jwks_refresh_cooldown_seconds: float = 30.0,
        jwks_timeout_seconds: float = 5.0,
    ) -> None:
        if jwks_url is None and jwt_secret is None:
            raise ValueError("a JWKS URL, a JWT secret, or both are needed to verify tokens")
        self._jwks = (
            PyJWKClient(
                jwks_url,
                cache_jwk_set=True,
                lifespan=jwks_cache_seconds,
                timeout=jwks_timeout_seconds,
                cooldown_duration=jwks_refresh_cooldown_seconds,
            )
            if jwks_url is not None
            else None
        )
        self._secret = jwt_secret
        self._issuer = issuer

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> TokenVerifier:
        return cls(
            jwks_url=settings.jwks_url,
            jwt_secret=settings.jwt_secret,
            issuer=issuer_for(settings.supabase_url) if settings.supabase_url else None,
            jwks_cache_seconds=settings.jwks_cache_seconds,
            jwks_refresh_cooldown_seconds=settings.jwks_refresh_cooldown_seconds,
            jwks_timeout_seconds=settings.jwks_timeout_seconds,
        )

    def verify(self, token: str | None) -> UserContext:
        """The caller behind `token`, or :class:`NotAuthenticated` saying what to do about it.

        Raises :class:`AuthUnavailable` when the JWKS cannot be fetched: that is no reason to
        tell a user their session is invalid.
        """
        if not token:
            raise NotAuthenticated(_MISSING, token_given=False)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise NotAuthenticated(_INVALID) from exc
        algorithm = header.get("alg")
        key = self._key_for(algorithm, header.get("kid"))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[str(algorithm)],
                audience=AUDIENCE,
                issuer=self._issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "sub", "aud", *(["iss"] if self._issuer else [])]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise NotAuthenticated(_EXPIRED) from exc
        except jwt.InvalidIssuerError as exc:
            raise NotAuthenticated(_OTHER_ISSUER) from exc
        except jwt.MissingRequiredClaimError as exc:
            raise NotAuthenticated(_OTHER_ISSUER if exc.claim == "iss" else _INVALID) from exc
        except jwt.PyJWTError as exc:
            raise NotAuthenticated(_INVALID) from exc
        # PostgREST switches to the role the token names: only a user's token may act as a user,
        # whichever transport carries it.
        if claims.get("role") != AUDIENCE:
            raise NotAuthenticated(_INVALID)
        # auth.uid() casts `sub` to uuid: anything else would fail in the database instead.
        if not _is_uuid(claims["sub"]):
            raise NotAuthenticated(_NO_USER)
        return UserContext(claims=claims, token=token)

    def _key_for(self, algorithm: object, key_id: object) -> Any:
        if algorithm == LEGACY_ALGORITHM and self._secret is not None:
            return self._secret
        if algorithm not in ASYMMETRIC_ALGORITHMS or self._jwks is None:
            raise NotAuthenticated(_INVALID)
        if not isinstance(key_id, str):
            raise NotAuthenticated(_INVALID)
        try:
            jwk = self._jwks.get_signing_key(key_id)
        except (PyJWKClientConnectionError, OSError, ValueError) as exc:
            # Unreachable, cut off mid-answer (OSError), or not JSON (ValueError): the JWKS
            # endpoint's fault, not the token's.
            raise AuthUnavailable() from exc
        except jwt.PyJWTError as exc:
            # No key with that id, even after a refresh: not one of the project's tokens.
            raise NotAuthenticated(_INVALID) from exc
        # A key is for one algorithm: an RS256 header on a token whose kid names an EC key fails.
        if jwk.algorithm_name != algorithm:
            raise NotAuthenticated(_INVALID)
        return jwk.key


def _is_uuid(value: object) -> bool:
    return isinstance(value, str) and _UUID.fullmatch(value) is not None
