"""Uploads of a saved adapter through the spec's signed URLs: one HTTP PUT a file, never a
storage key or credential of the trainer's own.

A file goes to ``upload_urls[<folder><name>]`` (``checkpoint/adapter_model.safetensors``, ...).
A PUT that fails on the network, or with a 5xx, 408 or 429 answer, is tried again a few times
with a growing pause; any other refusal (an expired signature's 403) fails at once. Either way
the run then fails with ``upload_failed``. The URLs are signed, so no message repeats them.
"""

from __future__ import annotations

import concurrent.futures
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx

from shared.training_events import ADAPTER_FILES, ArtifactTargets
from trainer.errors import UPLOAD_FAILED, TrainerError

_TIMEOUT: Final = httpx.Timeout(connect=10.0, read=120.0, write=300.0, pool=10.0)
_RETRIED_STATUSES: Final = frozenset({408, 429})


@dataclass(frozen=True)
class UploadPolicy:
    attempts: int = 4
    backoff_seconds: float = 1.0
    """The pause after the first failed attempt; it doubles after each further one."""


class Uploader:
    """PUTs a saved adapter's files to their signed URLs.

    ``targets`` None (a spec without artifacts) uploads nothing: ``upload`` answers False.
    """

    def __init__(self, targets: ArtifactTargets | None, policy: UploadPolicy | None = None):
        self._targets = targets
        self._policy = policy or UploadPolicy()
        self._client = httpx.Client(timeout=_TIMEOUT, follow_redirects=False)

    @property
    def location(self) -> str | None:
        return self._targets.location if self._targets else None

    def has_targets(self, folder: str) -> bool:
        """Whether every adapter file has an upload URL under ``folder``."""
        return self._targets is not None and all(
            folder + name in self._targets.upload_urls for name in ADAPTER_FILES
        )

    def upload(self, saved: Path, folder: str) -> bool:
        """PUT each adapter file of the directory ``saved`` to its URL under ``folder``; True
        when all of them were uploaded, False when the spec gave no URL for them.

        Raises:
            TrainerError: ``upload_failed`` (a file is missing, or a PUT failed for good).
        """
        if self._targets is None or not self.has_targets(folder):
            return False
        for name in ADAPTER_FILES:
            path = saved / name
            if not path.is_file():
                raise TrainerError(UPLOAD_FAILED, f"the saved adapter has no {name} to upload")
            self._put(self._targets.upload_urls[folder + name], path, folder + name)
        return True

    def _put(self, url: str, path: Path, name: str) -> None:
        content_type = "application/json" if name.endswith(".json") else "application/octet-stream"
        problem = "no attempt was made"
        for attempt in range(1, self._policy.attempts + 1):
            try:
                with path.open("rb") as body:
                    response = self._client.put(
                        url, content=body, headers={"Content-Type": content_type}
                    )
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.is_success:
                    return
                problem = f"HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code not in _RETRIED_STATUSES:
                    hint = " (an expired signature?)" if response.status_code == 403 else ""
                    raise TrainerError(
                        UPLOAD_FAILED, f"the upload of {name} was refused: {problem}{hint}"
                    )
            if attempt < self._policy.attempts:
                time.sleep(self._policy.backoff_seconds * 2 ** (attempt - 1))
        raise TrainerError(
            UPLOAD_FAILED,
            f"the upload of {name} failed {self._policy.attempts} times; last: {problem}",
        )

    def close(self) -> None:
        self._client.close()


class BackgroundUploads:
    """Checkpoint uploads on one thread of their own, so training goes on while they run.

    One upload at a time: ``start`` first waits for the one before. The training loop calls
    ``finished`` at each step boundary to learn which step's checkpoint has arrived (and to
    raise its failure there, on the main thread).
    """

    def __init__(self, uploader: Uploader) -> None:
        self._uploader = uploader
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="upload")
        self._pending: tuple[int, concurrent.futures.Future[bool]] | None = None

    def start(self, step: int, saved: Path, folder: str) -> list[tuple[int, bool]]:
        """Upload ``saved`` in the background; returns what ``wait`` returned for the one
        before."""
        done = self.wait()
        self._pending = (step, self._pool.submit(self._uploader.upload, saved, folder))
        return done

    def finished(self) -> list[tuple[int, bool]]:
        """``(step, uploaded)`` of an upload that has ended since the last call (none or one).

        Raises:
            TrainerError: the upload failed.
        """
        if self._pending is None or not self._pending[1].done():
            return []
        return self.wait()

    def wait(self) -> list[tuple[int, bool]]:
        """Wait for the upload under way, if any; ``(step, uploaded)`` of it."""
        if self._pending is None:
            return []
        step, future = self._pending
        self._pending = None
        return [(step, future.result())]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
