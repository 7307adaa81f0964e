"""The rooms on which Ranvier once disagreed with Synapse resolve as Synapse resolves them.

The fixtures live in ``interop_fixtures.py`` (each docstring says which interop choice it pins);
``test_synapse_diff.py`` runs the same fixtures through Synapse's own resolver.
"""

from __future__ import annotations

import pytest

from .interop_fixtures import FIXTURES


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_resolves_as_synapse_does(name: str) -> None:
    fixture = FIXTURES[name]()
    dag = fixture.dag
    resolved = dag.resolve(states=fixture.state_sets)
    for key, expected in fixture.expected.items():
        assert resolved.get(key) == expected, key
    # The input order of the state sets does not matter either.
    assert dag.resolve(states=list(reversed(fixture.state_sets))) == resolved
