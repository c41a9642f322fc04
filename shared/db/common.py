"""What the gateway and both transports share: the caller and the identifier check.

Kept apart from gateway.py, which chooses a transport, so that the transports never import the
module that imports them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Function and argument names end up in SQL (direct) or in a URL path (PostgREST): only plain
# identifiers, never anything a caller could smuggle syntax through.
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class UserContext:
    """A signed-in caller: the verified JWT claims (for the direct transport, which sets them as
    `request.jwt.claims` like PostgREST does) and the raw token (for PostgREST, which verifies
    it again on its side)."""

    claims: Mapping[str, Any]
    token: str = field(repr=False)

    @property
    def user_id(self) -> str:
        return str(self.claims["sub"])


def check_identifier(kind: str, name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"invalid SQL {kind} name: {name!r}")
    return name
