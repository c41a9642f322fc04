"""What get-job and cancel-job need to serve browsers: CORS and timeouts, and token checks."""

from __future__ import annotations

import functools

from shared.auth import TokenVerifier
from shared.config import ApiSettings, AuthSettings, load


@functools.cache
def api_settings() -> ApiSettings:
    return load(ApiSettings)


@functools.cache
def token_verifier() -> TokenVerifier:
    return TokenVerifier.from_settings(load(AuthSettings))
