"""The tenant state machine, as a table: every (from, to) pair."""

from __future__ import annotations

import itertools

import pytest

from relay_server.errors import ErrorKind, RelayError
from relay_server.tenancy.lifecycle import STATUSES, TRANSITIONS, check_transition

ALLOWED = {
    ("provisioning", "trial"),
    ("trial", "active"),
    ("trial", "expired"),
    ("active", "suspended"),
    ("suspended", "active"),
    ("suspended", "deleted"),
    ("expired", "deleted"),
    ("active", "deleted"),
}


def test_the_table_is_the_spec() -> None:
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == ALLOWED
    assert set(TRANSITIONS) == set(STATUSES)


@pytest.mark.parametrize(("current", "target"), list(itertools.product(STATUSES, STATUSES)))
def test_each_pair(current: str, target: str) -> None:
    if (current, target) in ALLOWED:
        check_transition(current, target)
        return
    with pytest.raises(RelayError) as info:
        check_transition(current, target)
    err = info.value
    assert err.kind is ErrorKind.FAILED_PRECONDITION and err.code == "invalid_status_transition" and err.http_status == 409
    assert current in err.message and target in err.message


def test_nothing_leaves_deleted_and_nothing_returns_to_trial_or_provisioning() -> None:
    assert TRANSITIONS["deleted"] == frozenset()
    assert not any("provisioning" in t for t in TRANSITIONS.values())
    assert [s for s, t in TRANSITIONS.items() if "trial" in t] == ["provisioning"]


def test_an_unknown_status_is_a_400_not_a_409() -> None:
    with pytest.raises(RelayError) as info:
        check_transition("active", "frozen")
    assert info.value.kind is ErrorKind.BAD_REQUEST and info.value.param == "status"
