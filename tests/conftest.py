from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.gateways import StartGateway, gateways
from tests.servers import Mosquitto, NatsCluster, VictoriaMetrics, mosquitto, victoria_metrics
from tests.servers import nats_cluster as run_nats_cluster

_INTEGRATION_DIRS = ("integration", "interop")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under an ``integration`` or ``interop`` folder (``tests/integration``,
    ``tests/connectors/<plug-in>/integration``, ...) talks to real servers: mark it so (``-m "not
    integration"`` runs the fast unit tests alone)."""
    for item in items:
        if any(part in _INTEGRATION_DIRS for part in item.path.relative_to(config.rootpath).parts[:-1]):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def mosquitto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    with mosquitto(tmp_path_factory.mktemp("mosquitto")) as server:
        yield server


@pytest.fixture(scope="session")
def victoria_metrics_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    with victoria_metrics(tmp_path_factory.mktemp("victoria-metrics")) as server:
        yield server


@pytest.fixture(scope="session")
def nats_cluster_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    """The session's one nats-server cluster; tests take it through ``nats_cluster``."""
    with run_nats_cluster(tmp_path_factory.mktemp("nats")) as cluster:
        yield cluster


@pytest.fixture
def nats_cluster(nats_cluster_session: NatsCluster) -> Iterator[NatsCluster]:
    """A 3-node nats-server cluster serving MQTT 3.1.1 (``.hosts``: the nodes' MQTT listeners), every node up
    and ready. A test may ``kill`` and ``restart`` nodes: whatever it left down is started again afterwards.
    JetStream keeps MQTT sessions across tests: give each client an id of its own."""
    nats_cluster_session.heal()
    yield nats_cluster_session
    nats_cluster_session.heal()


@pytest.fixture
def fake_plugins() -> Iterator[None]:
    """The test plug-ins of ``tests.fakes`` (recording sink, crashing and toggle sources), registered."""
    from tests import fakes

    yield from fakes.install()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[StartGateway]:
    """Start gateways in the test's loop (``await gateway(cfg)``); all are stopped at teardown."""
    async with gateways(tmp_path) as start:
        yield start
