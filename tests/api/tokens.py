"""Tokens for the API tests: Supabase-style user JWTs signed with keys the tests hold, a JWKS
served over real HTTP, and the forgeries a verifier must refuse."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

# The legacy shared secret (HS256), as a Supabase project has it.
JWT_SECRET = "legacy-jwt-secret-of-the-api-tests-0123456789abcdef"


@dataclass(frozen=True)
class SigningKey:
    """One of the project's asymmetric signing keys: the private half signs, the public half is
    published in the JWKS under `kid`."""

    kid: str
    algorithm: str
    private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

    @classmethod
    def es256(cls) -> SigningKey:
        return cls(f"es-{uuid.uuid4().hex[:8]}", "ES256", ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def rs256(cls) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(f"rs-{uuid.uuid4().hex[:8]}", "RS256", key)

    def jwk(self) -> dict[str, Any]:
        public = self.private_key.public_key()
        if isinstance(public, ec.EllipticCurvePublicKey):
            fields: dict[str, Any] = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            fields = RSAAlgorithm.to_jwk(public, as_dict=True)
        return {**fields, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, claims: dict[str, Any], *, kid: str | None = None) -> str:
        return jwt.encode(
            claims, self.private_key, algorithm=self.algorithm, headers={"kid": kid or self.kid}
        )


def user_claims(
    user_id: uuid.UUID | str, *, expires_in: int = 3600, **extra: Any
) -> dict[str, Any]:
    """The claims Supabase Auth puts in a signed-in user's access token."""
    now = int(time.time())
    return {
        "iss": "http://127.0.0.1/auth/v1",
        "sub": str(user_id),
        "aud": "authenticated",
        "role": "authenticated",
        "email": f"{str(user_id)[:8]}@example.com",
        "iat": now,
        "exp": now + expires_in,
        "session_id": str(uuid.uuid4()),
        **extra,
    }


def hs256_token(claims: dict[str, Any], secret: str = JWT_SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segments(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())


def unsigned_token(claims: dict[str, Any]) -> str:
    """`alg: none`: no signature at all."""
    return _segments({"alg": "none", "typ": "JWT"}, claims) + "."


def hmac_forged_with_public_key(claims: dict[str, Any], key: SigningKey) -> str:
    """The algorithm-confusion forgery: HS256 "signed" with the public key anyone can fetch, in
    the hope that a verifier takes the key for the algorithm the token names."""
    signing_input = _segments({"alg": "HS256", "typ": "JWT", "kid": key.kid}, claims)
    signature = hmac.new(key.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(signature)


class JwksServer:
    """The project's JWKS endpoint on 127.0.0.1, serving the keys published last, counting
    fetches; `fail` makes it answer 500 instead."""

    def __init__(self, *keys: SigningKey) -> None:
        self.fetches = 0
        self.fail = False
        self._document = b""
        self.publish(*keys)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.fetches += 1
                status, body = (500, b"oops") if server.fail else (200, server._document)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Keep test output quiet."""

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}/auth/v1/.well-known/jwks.json"

    def publish(self, *keys: SigningKey) -> None:
        self.serve(json.dumps({"keys": [key.jwk() for key in keys]}).encode())

    def serve(self, document: bytes) -> None:
        """Answer with `document` as it is, JSON or not."""
        self._document = document

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
