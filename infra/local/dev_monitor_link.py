"""The URL `make dev` prints: the monitor page on a demo job, signed in as the demo user.

The URL's fragment carries the API addresses and an access token minted for the demo user; a
browser never sends a fragment to a server.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO
from urllib.parse import urlencode

import jwt


def mint_access_token(secret: str, user_id: str, *, ttl: timedelta, email: str = "") -> str:
    """An access token shaped like one Supabase Auth issues (HS256, legacy JWT secret)."""
    now = datetime.now(UTC)
    claims = {
        "sub": user_id,
        "aud": "authenticated",
        "role": "authenticated",
        "email": email,
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def monitor_url(
    urls: dict[str, str], job_id: str, *, token: str, poll_seconds: float | None = None
) -> str:
    """The monitor page on `job_id`, configured through the URL fragment (see web/main.js).

    `urls` holds the servers' addresses by name: ``web``, ``get-job`` and ``cancel-job``.
    """
    params = {
        "job": job_id,
        "get_job": urls["get-job"],
        "cancel_job": urls["cancel-job"],
        "token": token,
    }
    if poll_seconds is not None:
        params["poll"] = f"{poll_seconds:g}"
    # ":" and "/" may stand in a fragment as they are: the URL stays readable.
    return f"{urls['web']}/#{urlencode(params, safe=':/')}"


def print_welcome(
    out: IO[str], *, logs_dir: Path, psql_url: str, url: str, other_job_ids: list[str]
) -> None:
    """What `make dev` prints once every piece is up: where to look, and how to stop."""
    print(
        f"\nLogs: {logs_dir}\n"
        f"psql: psql '{psql_url}'\n"
        "\nOpen the training monitor on the demo job:\n\n"
        f"  {url}\n",
        file=out,
        flush=True,
    )
    if other_job_ids:
        print(f"Other demo jobs (put their id in job=): {', '.join(other_job_ids)}", file=out)
    print("Press Ctrl-C to stop.\n", file=out, flush=True)
