"""Fixtures shared by the integration tiers: one real 3-member etcd cluster (TLS) for the
whole session, started on first use, for the store suite and the API server suite."""

from __future__ import annotations

import pytest

from tests.integration.store.etcdcluster import EtcdCluster


@pytest.fixture(scope="session")
def etcd_cluster(tmp_path_factory):
    cluster = EtcdCluster(str(tmp_path_factory.mktemp("etcd")))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
