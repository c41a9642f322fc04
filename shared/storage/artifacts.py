"""Where a job's adapter and checkpoints are stored, and the signed URLs that reach them.

Everything a run produces goes to one bucket, under ``<user id>/<job id>/``: ``adapter/`` for
the final adapter and ``checkpoint/`` for the latest checkpoint, each holding the PEFT files
(``ADAPTER_FILES``). The trainer gets signed upload URLs for exactly those files, never a storage
key; the owner of a completed job gets short-lived signed download URLs for the adapter. Both
are derived from the job's own ids, never from a location a cluster reported, so a report cannot
point a download link at another user's files.
"""

from __future__ import annotations

from typing import Final, Protocol
from uuid import UUID

from shared.training_events import ADAPTER_DIR, ADAPTER_FILES, CHECKPOINT_DIR, ArtifactTargets

ARTIFACTS_BUCKET: Final = "lora-artifacts"

# A run may wait in a queue and train for days; SigV4 URLs cannot outlive a week.
UPLOAD_URL_TTL_SECONDS: Final = 7 * 24 * 60 * 60
# Long enough to start a download from the monitor page, short enough not to be shared around.
DOWNLOAD_URL_TTL_SECONDS: Final = 15 * 60


def artifact_prefix(user_id: UUID | str, job_id: UUID | str) -> str:
    """The job's folder in the artifacts bucket."""
    return f"{UUID(str(user_id))}/{UUID(str(job_id))}/"


def artifact_location(user_id: UUID | str, job_id: UUID | str) -> str:
    """How a job records its artifacts' place, whatever the storage backend."""
    return f"storage://{ARTIFACTS_BUCKET}/{artifact_prefix(user_id, job_id)}"


def adapter_location(user_id: UUID | str, job_id: UUID | str) -> str:
    """Where the final adapter of a job is, as the trainer reports it when it completes."""
    return artifact_location(user_id, job_id) + ADAPTER_DIR


def upload_keys(user_id: UUID | str, job_id: UUID | str) -> dict[str, str]:
    """Each file a run may upload (relative to its location) with its object key."""
    prefix = artifact_prefix(user_id, job_id)
    return {
        folder + name: prefix + folder + name
        for folder in (ADAPTER_DIR, CHECKPOINT_DIR)
        for name in ADAPTER_FILES
    }


class ArtifactStorage(Protocol):
    """Signs the URLs a run uploads its adapter through, and those its owner downloads it by."""

    def upload_targets(self, user_id: UUID | str, job_id: UUID | str) -> ArtifactTargets:
        """Signed upload URLs for every file of the job's adapter and checkpoint.

        Raises:
            StorageError: the storage service could not be used.
        """
        ...

    def adapter_download_urls(
        self,
        user_id: UUID | str,
        job_id: UUID | str,
        expires_in: int = DOWNLOAD_URL_TTL_SECONDS,
    ) -> dict[str, str]:
        """A signed download URL for each file of the job's final adapter.

        Raises:
            DatasetFileMissing: the adapter is not (or no longer) stored.
            StorageError: the storage service could not be used.
        """
        ...
