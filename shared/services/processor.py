"""What the processor needs besides the database, the cluster and storage: its settings."""

from __future__ import annotations

import functools

from shared.config import ProcessorSettings, load
from shared.services.storage import storage as storage


@functools.cache
def processor_settings() -> ProcessorSettings:
    return load(ProcessorSettings)
