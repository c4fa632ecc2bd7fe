"""The Docker sandbox tests again, under gVisor (runsc): the same limits must hold in the stronger sandbox."""

from __future__ import annotations

import docker
import pytest

from provider.runtimes import get_runtime
from provider.runtimes.base import Runtime
from tests.provider.test_docker_sandbox import *  # noqa: F403  (the tests themselves)
from tests.provider.test_docker_sandbox import _nothing_left_behind  # noqa: F401


# replaces the docker `backend` of the imported tests
@pytest.fixture  # type: ignore[no-redef]
def backend(docker_client: docker.DockerClient) -> Runtime:
    runtime = get_runtime("runsc")
    assert runtime.available(), "runsc is installed by make setup and registered by scripts/docker_engine.sh"
    return runtime
