from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from relay_server.stack.redis import RedisHandle
from tests.support.pg import PgCluster
from tests.support.stack import RelayStack, start_stack


@pytest.fixture(scope="session")
def relay(pg_cluster: PgCluster, redis_server: RedisHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayStack]:
    db = pg_cluster.create_database()
    stack = start_stack(db, Path(tmp_path_factory.mktemp("relay-e2e")), redis_url=redis_server.url)
    yield stack
    stack.stop()
    pg_cluster.drop_database(db)


@pytest.fixture
def client(relay: RelayStack) -> OpenAI:
    # max_retries=0: a test must see the first answer, not a retried one.
    return OpenAI(base_url=relay.base_url, api_key=relay.test_key, max_retries=0, timeout=30)


@pytest.fixture
def http(relay: RelayStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=relay.base_url, headers={"authorization": f"Bearer {relay.test_key}"}, timeout=60) as c:
        yield c
