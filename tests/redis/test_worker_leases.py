"""RedisLeases: an engine can only ever take a free lease, and extend or drop its own."""

from __future__ import annotations

import pytest

from infra.redis.lease import RedisLeases
from tests.integration.conftest import wait_until

PREFIX = "reaper-test"


@pytest.fixture
def leases(any_client) -> RedisLeases:
    return RedisLeases(any_client, prefix=PREFIX)


def test_a_free_lease_is_taken_once(leases):
    assert leases.acquire("m1", "engine-a", ttl=30) is True
    assert leases.acquire("m1", "engine-b", ttl=30) is False
    assert leases.holder("m1") == "engine-a"
    assert leases.acquire("m2", "engine-b", ttl=30) is True  # another mission is apart
    assert leases.client.get(f"{PREFIX}:lease:m1") == b"engine-a"


def test_the_holder_acquiring_again_extends_its_lease(leases, any_client):
    assert leases.acquire("m1", "engine-a", ttl=5)
    assert leases.acquire("m1", "engine-a", ttl=60) is True  # a restart under the same id
    assert any_client.pttl(leases.key("m1")) > 50_000


def test_someone_elses_owner_id_can_neither_renew_nor_release(leases, any_client):
    assert leases.acquire("m1", "engine-a", ttl=10)
    assert leases.renew("m1", "engine-b", ttl=600) is False
    assert any_client.pttl(leases.key("m1")) <= 10_000  # not extended by the intruder
    leases.release("m1", "engine-b")
    assert leases.holder("m1") == "engine-a"  # not dropped either


def test_the_holder_renews_and_releases_and_the_lease_is_free_again(leases, any_client):
    assert leases.acquire("m1", "engine-a", ttl=10)
    assert leases.renew("m1", "engine-a", ttl=600) is True
    assert any_client.pttl(leases.key("m1")) > 500_000
    leases.release("m1", "engine-a")
    assert leases.holder("m1") is None
    assert leases.acquire("m1", "engine-b", ttl=10) is True


def test_a_lease_nobody_renews_expires_and_its_old_holder_cannot_renew_it(leases):
    assert leases.acquire("m1", "engine-a", ttl=0.2)
    wait_until(lambda: leases.holder("m1") is None, timeout=5, what="the lease to expire")
    assert leases.renew("m1", "engine-a", ttl=10) is False  # gone: nothing to extend
    assert leases.acquire("m1", "engine-b", ttl=10) is True
    assert leases.renew("m1", "engine-a", ttl=10) is False  # someone else's now
    assert leases.holder("m1") == "engine-b"


def test_renewing_or_releasing_a_lease_nobody_holds_is_harmless(leases):
    assert leases.renew("nobody", "engine-a", ttl=10) is False
    leases.release("nobody", "engine-a")
    assert leases.holder("nobody") is None
