"""The workers: and redis: sections: layouts that cannot work are refused before anything starts, with the
key named; role plans and the stable shard choice."""

from __future__ import annotations

from typing import Any

import pytest

from ranvier.config import ConfigError, parse_config
from ranvier.workers.roles import pick, plan_for

PG = "postgresql://ranvier@127.0.0.1:5432/ranvier"


def _config(**overrides: Any) -> dict[str, Any]:
    workers: dict[str, Any] = {
        "secret": "0123456789abcdef0123",
        "instances": {
            "main": {"role": "main", "replication": {"port": 9100}},
            "reader1": {"role": "client_reader", "listeners": {"client": {"port": 8101}}},
            "persister1": {"role": "event_persister", "replication": {"port": 9111}},
            "sender1": {"role": "federation_sender"},
        },
        "event_persisters": ["persister1"],
        "federation_senders": ["sender1"],
    }
    base = {
        "server_name": "example.org",
        "signing_key_path": "signing.key",
        "database": {"url": PG},
        "redis": {"url": "redis://127.0.0.1:6379/0"},
        "workers": workers,
    }
    for key, value in overrides.items():
        if key.startswith("workers."):
            workers[key.removeprefix("workers.")] = value
        else:
            base[key] = value
    return base


def test_a_valid_layout_and_what_each_role_runs() -> None:
    config = parse_config(_config())
    assert config.workers is not None
    main = plan_for(config.workers, "main")
    reader = plan_for(config.workers, "reader1")
    persister = plan_for(config.workers, "persister1")
    sender = plan_for(config.workers, "sender1")
    assert (main.persists_events, main.federation_sender, main.background) == (False, False, True)
    assert reader.client_listener and not reader.persists_events and not reader.background
    assert persister.persists_events and persister.replication_listener and not persister.client_listener
    assert sender.federation_sender and not sender.client_listener
    assert main.persister_of("!room:example.org") == "persister1"
    assert sender.owns_destination("other.example") and not main.owns_destination("other.example")
    with pytest.raises(KeyError):
        plan_for(config.workers, "nobody")


def test_no_workers_is_one_process_running_everything() -> None:
    config = parse_config(
        {**_config(), "workers": None, "redis": None, "database": {"url": "sqlite:///x.db"}}
    )
    plan = plan_for(config.workers)
    assert plan.persists_events and plan.federation_sender and plan.background and not plan.multi_process


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"database": {"url": "sqlite:///x.db"}}, "database.url: workers need PostgreSQL"),
        ({"redis": None}, "redis: required"),
        ({"workers.event_persisters": ["ghost"]}, "'ghost' is not in workers.instances"),
        ({"workers.federation_senders": ["reader1"]}, "'reader1' has role 'client_reader'"),
        (
            {
                "workers.instances": {"main": {"role": "main"}, "p": {"role": "event_persister"}},
                "workers.event_persisters": ["p"],
                "workers.federation_senders": [],
            },
            "workers.instances.p.replication: an event persister needs a replication listener",
        ),
        (
            {
                "workers.instances": {"main": {"role": "main"}, "r": {"role": "client_reader"}},
                "workers.event_persisters": [],
                "workers.federation_senders": [],
            },
            "workers.instances.main.replication",
        ),
        (
            {
                "workers.instances": {
                    "main": {"role": "main", "replication": {"port": 1}},
                    "b1": {"role": "background"},
                    "b2": {"role": "background"},
                },
                "workers.event_persisters": [],
                "workers.federation_senders": [],
            },
            "at most one background instance",
        ),
    ],
)
def test_layouts_that_cannot_work_are_refused_naming_the_key(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(_config(**overrides))
    assert message in str(raised.value)


def test_the_replication_listener_binds_loopback_only() -> None:
    bad = _config()
    bad["workers"]["instances"]["persister1"]["replication"]["bind"] = "0.0.0.0"
    with pytest.raises(ConfigError, match="loopback"):
        parse_config(bad)


def test_the_shard_choice_is_stable_and_moves_few_keys_when_a_name_is_added() -> None:
    keys = [f"!room{i}:example.org" for i in range(2000)]
    two = {k: pick(["p1", "p2"], k) for k in keys}
    assert two == {k: pick(["p2", "p1"], k) for k in keys}  # the list's order does not matter
    assert 800 < sum(v == "p1" for v in two.values()) < 1200
    three = {k: pick(["p1", "p2", "p3"], k) for k in keys}
    # Rendezvous hashing: only keys that go to the new name move.
    assert all(three[k] in (two[k], "p3") for k in keys)
