"""The cluster tests run the REST client against the real simulator, over real HTTP.

One simulator process serves the whole session, fast enough that a run takes a fraction of a
second; each test starts from a reset simulator.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from infra.local.processes import ServerProcess, start_cluster_simulator
from shared.cluster import RestTrainingCluster
from tests.cluster.support import API_KEY, DatasetServer, RecordingSleep, SimulatorControl

# Runs advance this fast in tests unless a test slows them down.
STEPS_PER_SECOND = 200.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def simulator() -> Iterator[ServerProcess]:
    with start_cluster_simulator(
        api_key=API_KEY, steps_per_second=STEPS_PER_SECOND, init_seconds=0.0
    ) as server:
        yield server


@pytest.fixture
def sim(simulator: ServerProcess) -> Iterator[SimulatorControl]:
    control = SimulatorControl(simulator.base_url)
    control.reset()
    yield control
    control.close()


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
