"""The project's error hierarchy.

Every error the library raises on purpose derives from :class:`LoraRunnerError`; the HTTP layer
maps each family to a status code, and a subclass's docstring is its default message. Driver
errors (psycopg, httpx, botocore) are wrapped with ``raise ... from exc`` so the cause survives in
logs while the user only ever sees the message written here.
"""

from __future__ import annotations


class LoraRunnerError(Exception):
    """Something went wrong in the LoRA job runner."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__doc__ or "").strip()
        super().__init__(self.message)


class ConfigurationError(LoraRunnerError):
    """The runner is not configured correctly."""


# --- callers -------------------------------------------------------------------------------------


class InvalidRequest(LoraRunnerError):
    """The request is not valid."""


class NotAuthenticated(LoraRunnerError):
    """Sign in to continue: this request needs a valid access token."""

    def __init__(self, message: str | None = None, *, token_given: bool = True) -> None:
        super().__init__(message)
        # RFC 6750: a request without credentials is told the scheme only; one with a bad token
        # is told the token is invalid.
        self.token_given = token_given


class AuthUnavailable(LoraRunnerError):
    """Your sign-in could not be checked right now; try again in a moment."""


# --- database ------------------------------------------------------------------------------------


# The gateway fills in `sqlstate` (the database's error code, or PostgREST's PGRSTxxx; None when
# the database was not reached) and `function` (the SQL function called), so that a caller can log
# them next to its own context (a job id); neither is ever shown to a user.
class DatabaseError(LoraRunnerError):
    """The database refused the operation."""

    def __init__(
        self,
        message: str | None = None,
        *,
        sqlstate: str | None = None,
        function: str | None = None,
    ) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.function = function


class DatabaseUnavailable(DatabaseError):
    """The database could not be reached."""


class InvalidValue(DatabaseError):
    """A value in the request is not in the form the database expects."""


class NotFound(DatabaseError):
    """No such record, or it is not yours."""


class PermissionDenied(DatabaseError):
    """You are not allowed to do that."""


class Conflict(DatabaseError):
    """The record is not in a state that allows this."""


class InvalidTransition(Conflict):
    """The job cannot move to that status from its current one."""


# --- storage -------------------------------------------------------------------------------------


class StorageError(LoraRunnerError):
    """The dataset storage could not be used."""


class UnknownBucket(StorageError):
    """The dataset lives in a storage bucket this runner does not know."""


class DatasetFileMissing(StorageError):
    """The dataset file is not in its storage bucket."""


class ArtifactMissing(StorageError):
    """The job's trained adapter is not in storage."""


# --- GPU cluster ---------------------------------------------------------------------------------


class ClusterError(LoraRunnerError):
    """The GPU cluster could not handle the request."""


class ClusterUnavailable(ClusterError):
    """The GPU cluster is unavailable right now; the request may succeed later."""


class ClusterBadResponse(ClusterUnavailable):
    """The GPU cluster answered with a body that does not follow its contract."""


class ClusterRejected(ClusterError):
    """The GPU cluster refused the request; retrying will not help."""

    def __init__(
        self, message: str | None = None, *, status_code: int | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
