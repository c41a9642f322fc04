"""The cluster tests run the REST client against the real simulator, over real HTTP.

The session's one simulator process (the `simulator` and `sim` fixtures of tests/conftest.py)
is fast enough that a run takes a fraction of a second; each test starts from a reset simulator.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from shared.cluster import RestTrainingCluster
from tests.cluster.support import (
    API_KEY,
    DatasetServer,
    RecordingSleep,
    SimulatorControl,
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def datasets() -> Iterator[DatasetServer]:
    server = DatasetServer()
    yield server
    server.close()


@pytest.fixture
def sleeps() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
async def cluster(
    sim: SimulatorControl, sleeps: RecordingSleep
) -> AsyncIterator[RestTrainingCluster]:
    async with RestTrainingCluster(
        sim.base_url,
        API_KEY,
        connect_timeout=1.0,
        read_timeout=0.5,
        max_attempts=3,
        sleep=sleeps,
    ) as client:
        yield client
