"""Entity keys: which identifiers name someone, and the tombstone an erasure leaves."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pitlane.domain import entities
from pitlane.domain.entities import EntityKey, erased_marker, is_junk_id

JUNK = [
    "",
    "   ",
    "null",
    "NULL",
    "Null",
    "anonymous",
    "0",
    "0000",
    "00000000-0000-0000-0000-000000000000",
    "-1",
]
NOT_JUNK = ["anon-12ab", "C123", "10", "01", "100", "web-0", "-", "anonymous-42"]


@pytest.mark.parametrize("value", JUNK)
def test_junk_ids_name_nobody(value: str) -> None:
    assert is_junk_id(value)


def test_a_missing_id_is_junk() -> None:
    assert is_junk_id(None)


@pytest.mark.parametrize("value", NOT_JUNK)
def test_real_ids_are_not_junk(value: str) -> None:
    assert not is_junk_id(value)


@given(st.text(alphabet="-0 O1a\t", max_size=8))
def test_an_id_of_zeros_and_dashes_alone_is_junk_when_it_has_a_zero(value: str) -> None:
    text = value.strip().lower()
    zeros = text != "" and set(text) <= {"0", "-"} and "0" in text

    assert is_junk_id(value) is (zeros or text in {"", "-1"})


def test_keys_carry_kind_and_id() -> None:
    assert entities.customer("C1") == EntityKey("customer", "C1")
    assert entities.anonymous("anon-1") == EntityKey("anonymous", "anon-1")
    assert entities.vehicle("VIN1") == EntityKey("vehicle", "VIN1")
    assert len({entities.customer("X"), entities.anonymous("X"), entities.vehicle("X")}) == 3


def test_erased_marker_is_deterministic() -> None:
    assert erased_marker("C123", "salt-a") == erased_marker("C123", "salt-a")
    assert erased_marker("C123", "salt-a").kind == "erased"


def test_erased_marker_depends_on_salt_and_id() -> None:
    assert erased_marker("C123", "salt-a") != erased_marker("C123", "salt-b")
    assert erased_marker("C123", "salt-a") != erased_marker("C124", "salt-a")


def test_erased_marker_does_not_keep_the_id() -> None:
    customer_id = "customer-4711@example.com"
    marker = erased_marker(customer_id, "salt-a")

    assert customer_id not in marker.id
    assert "4711" not in marker.id
    assert marker.id != erased_marker(customer_id, "").id


def test_a_customers_marker_is_hashed_as_it_always_was() -> None:
    """Markers already stored in Redis must keep forbidding their customers."""
    expected = hashlib.sha256(b"salt-a\x00C123").hexdigest()[:32]

    assert erased_marker("C123", "salt-a") == EntityKey("erased", expected)


def test_a_visitors_tombstone_does_not_keep_the_id() -> None:
    anonymous_id = "anon-7f3a9c2d"
    tombstone = erased_marker(anonymous_id, "salt-a", "anonymous")

    assert tombstone.kind == "erased"
    assert anonymous_id not in tombstone.id
    assert "7f3a9c2d" not in tombstone.id
    assert tombstone != erased_marker(anonymous_id, "salt-b", "anonymous")


@given(st.text(max_size=30), st.text(max_size=30))
def test_a_visitors_tombstone_never_stands_for_a_customer(anonymous_id: str, other: str) -> None:
    """Not even for a customer id that spells out the visitor's namespace."""
    tombstone = erased_marker(anonymous_id, "salt-a", "anonymous")

    assert tombstone != erased_marker(anonymous_id, "salt-a")
    assert tombstone != erased_marker(other, "salt-a")
    assert tombstone != erased_marker(f"\x01anonymous\x00{anonymous_id}", "salt-a")
