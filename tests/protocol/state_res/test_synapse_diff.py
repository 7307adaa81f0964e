"""Differential test: Ranvier's ``resolve_state`` against Synapse's own resolver on random forked rooms.

Synapse (``tests/interop/synapse.py``'s version) is installed from PyPI into ``.venvs/`` on first use and
runs in a subprocess of its venv (see ``synapse_diff.py``). If it cannot be installed the test is skipped
with the reason printed; under ``CI=true`` that is a failure, as for the other interop tests.

The CI-sized run covers 3,000 rooms of versions 1, 2, 10, 11 and 12, about 12,000 resolutions (the final
one, the state before each merge, and states after random pairs of events);
``python3 -m bench state_res_diff --rooms 100000`` is the long run. The fixtures of ``interop_fixtures.py``
are run through Synapse too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.interop.synapse import ensure_synapse

from .interop_fixtures import FIXTURES
from .synapse_diff import (
    BuiltRoom,
    SynapseResolver,
    describe,
    generate,
    request_for,
    run,
    shrink,
    synapse_state,
)

ROOMS = int(os.environ.get("RANVIER_STATE_RES_DIFF_ROOMS", "3000"))
# A fixed seed range: a failure names its seed and reproduces with ``--seed``.
FIRST_SEED = 1_000_000


@pytest.fixture(scope="module")
def resolver() -> Iterator[SynapseResolver]:
    try:
        python = ensure_synapse()
    except Exception as e:  # pip or the network: not a property of Ranvier
        reason = f"Synapse could not be installed for the state resolution differential test: {e}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    r = SynapseResolver(python)
    yield r
    r.close()


def test_random_rooms_resolve_like_synapse(resolver: SynapseResolver) -> None:
    result = run(resolver, range(FIRST_SEED, FIRST_SEED + ROOMS))
    assert not result.errors, "\n".join(result.errors[:5])
    assert sum(result.rooms.values()) >= ROOMS * 9 // 10, result.rooms  # the rooms did get resolved
    if result.divergences:
        shown = [describe(shrink(resolver, d)) for d in result.divergences[:3]]
        header = f"{len(result.divergences)} of {result.resolutions} resolutions differ:\n"
        pytest.fail(header + "\n".join(shown))


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_expectations_are_synapses(resolver: SynapseResolver, name: str) -> None:
    """Each fixture's expected state is what Synapse's resolver makes of it, and Ranvier agrees."""
    fixture = FIXTURES[name]()
    dag = fixture.dag
    room = BuiltRoom(generate(0), dag, fixture.state_sets)
    theirs = synapse_state(resolver.call(request_for(room, 1)))
    named = {k: dag.names[v] for k, v in theirs.items()}
    for key, expected in fixture.expected.items():
        assert named.get(key) == expected, key
    assert dag.resolve(states=fixture.state_sets) == named
