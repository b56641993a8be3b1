"""Real etcd and a real PostgreSQL primary with its synchronous standby, on 127.0.0.1, for
the replicated mode (issue 18): started once per test module, stopped at its end
(tests/services.py). Nothing is mocked."""
from __future__ import annotations

import itertools

import pytest

from tests.services import Etcd, PostgresPair

_shards = itertools.count(1)


@pytest.fixture(scope="module")
def pg():
    with PostgresPair() as pair:
        yield pair


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    with Etcd(str(tmp_path_factory.mktemp("etcd"))) as e:
        yield e


@pytest.fixture
def shard_no() -> int:
    """A shard number no other test of the module's database has used."""
    return next(_shards)
