"""Reading homeserver.yaml into its sections (ranvier.config_schema, which replaced pydantic for issue 21's
idle memory): every problem reported at once with its key, what is accepted for each type, defaults, and
the copies the worker roles make."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from ranvier.config import Caches, ConfigError, RateLimit, TrustedKeyServer, parse_config, render_config
from ranvier.config_schema import as_dict
from ranvier.workers.roles import config_for_instance, plan_for


def _minimal(**sections: Any) -> dict[str, Any]:
    return {
        "server_name": "example.org",
        "signing_key_path": "signing.key",
        "database": {"url": "sqlite:///x.db"},
        **sections,
    }


def _problems(data: Any) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse_config(data)
    lines = str(raised.value).splitlines()
    assert lines[0] == "invalid configuration:"
    return [line.strip() for line in lines[1:]]


def test_every_problem_is_reported_at_once_naming_its_key() -> None:
    problems = _problems(
        {
            "server_name": "not a name",
            "database": {"url": "mysql://x"},
            "listeners": {"client": {"port": 70000, "colour": "red"}, "metrics": {"enabled": "maybe"}},
            "federation": {"retry_initial_backoff": 0, "trusted_key_servers": ["a.org", {"verify_keys": {}}]},
            "rooms": {"default_room_version": "99", "encryption_enabled_by_default_for_room_type": False},
            "caches": {"events": "many"},
            "workers": {"secret": "short", "instances": {"main": {"role": "king"}}},
            "redis": {"url": "http://x"},
        }
    )
    assert sorted(problems) == sorted(
        [
            "server_name: Value error, 'not a name' is not a valid server name (hostname, IP literal, "
            "optional :port)",
            "signing_key_path: Field required",
            "listeners.client.colour: Extra inputs are not permitted",
            "listeners.client.port: Input should be less than or equal to 65535",
            "listeners.metrics.enabled: Input should be a valid boolean",
            "database.url: Value error, must start with sqlite:// or postgresql://",
            "federation.trusted_key_servers.1.server_name: Field required",
            "federation.retry_initial_backoff: Input should be greater than 0",
            "rooms.default_room_version: Value error, unknown room version '99'",
            # YAML's bare `off` is the boolean false, not the string "off".
            "rooms.encryption_enabled_by_default_for_room_type: Input should be 'all', 'invite' or 'off'",
            "caches.events: Input should be a valid integer",
            "workers.secret: String should have at least 16 characters",
            "workers.instances.main.role: Input should be 'main', 'client_reader', 'event_persister', "
            "'federation_inbound', 'federation_sender', 'media' or 'background'",
            "redis.url: Value error, must start with redis:// or unix://",
        ]
    )


def test_the_top_level_must_be_a_mapping_and_sections_too() -> None:
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        parse_config(["server_name"])
    assert _problems(_minimal(listeners=[1])) == [
        "listeners: Input should be a valid dictionary or instance of Listeners"
    ]
    assert _problems(_minimal(voip={"turn_uris": "turn:x"})) == [
        "voip.turn_uris: Input should be a valid list"
    ]
    assert _problems(_minimal(federation={"host_overrides": {"a.org": 5}})) == [
        "federation.host_overrides.a.org: Input should be a valid string"
    ]


def test_values_are_taken_as_pydantic_took_them_but_a_boolean_is_no_number() -> None:
    config = parse_config(
        _minimal(
            listeners={
                "client": {"port": "8009"},
                "federation": {"port": 8449.0},
                "metrics": {"enabled": "on"},
            },
            registration={"enabled": 1},
            federation={"retry_max_backoff": 60, "transaction_timeout": "2.5", "ip_range_blocklist": None},
            key_fetch={"timeout": 1},
        )
    )
    assert config.listeners.client.port == 8009 and type(config.listeners.client.port) is int
    assert config.listeners.federation.port == 8449 and type(config.listeners.federation.port) is int
    assert config.listeners.metrics.enabled is True and config.registration.enabled is True
    assert config.federation.retry_max_backoff == 60.0 and type(config.federation.retry_max_backoff) is float
    assert config.federation.transaction_timeout == 2.5
    assert config.federation.ip_range_blocklist is None
    assert type(config.key_fetch.timeout) is float
    # A string is never made from a number, nor a number from a boolean (`port: true` is a mistake).
    assert _problems(_minimal(server_notices={"system_mxid_localpart": 5})) == [
        "server_notices.system_mxid_localpart: Input should be a valid string"
    ]
    assert _problems(_minimal(listeners={"client": {"port": True}})) == [
        "listeners.client.port: Input should be a valid integer"
    ]
    assert _problems(_minimal(key_fetch={"timeout": "soon"})) == [
        "key_fetch.timeout: Input should be a valid number"
    ]


def test_unions_take_the_plain_value_or_the_section() -> None:
    config = parse_config(
        _minimal(
            federation={
                "trusted_key_servers": ["a.org", {"server_name": "b.org", "verify_keys": {"ed25519:k": "x"}}]
            }
        )
    )
    assert config.federation.trusted_key_servers == [
        "a.org",
        TrustedKeyServer(server_name="b.org", verify_keys={"ed25519:k": "x"}),
    ]
    assert config.accounts.access_token_lifetime is None
    assert (
        parse_config(_minimal(accounts={"access_token_lifetime": 60})).accounts.access_token_lifetime == 60.0
    )
    assert _problems(_minimal(accounts={"access_token_lifetime": 0})) == [
        "accounts.access_token_lifetime: Input should be greater than 0"
    ]


def test_defaults_are_fresh_objects_and_match_the_generated_file() -> None:
    first, second = parse_config(_minimal()), parse_config(_minimal())
    first.federation.trusted_key_servers.append("a.org")
    first.rate_limits.login.burst = 1
    assert second.federation.trusted_key_servers == [] and second.rate_limits.login.burst == 20
    assert second.rate_limits.login == RateLimit(per_second=1.0, burst=20)
    generated = parse_config(yaml.safe_load(render_config("example.org")))
    # The generated file names the certificate files and a secret; every other section is the defaults.
    for section in ("federation", "rate_limits", "request_limits", "key_fetch", "media", "caches", "rooms"):
        assert as_dict(getattr(generated, section)) == as_dict(getattr(second, section)), section
    assert as_dict(Caches()) == yaml.safe_load(render_config("example.org"))["caches"]


def test_a_worker_sees_its_own_listeners_and_the_main_config_is_left_alone() -> None:
    config = parse_config(
        _minimal(
            database={"url": "postgresql://ranvier@127.0.0.1:5432/ranvier"},
            redis={},
            workers={
                "secret": "0123456789abcdef",
                "instances": {
                    "main": {"role": "main", "replication": {"port": 9100}},
                    "reader": {
                        "role": "client_reader",
                        "listeners": {"client": {"port": 8101}, "metrics": {"port": 9191}},
                    },
                },
            },
        )
    )
    assert config.workers is not None
    seen = config_for_instance(config, plan_for(config.workers, "reader"))
    assert seen.listeners.client.port == 8101
    assert (seen.listeners.metrics.enabled, seen.listeners.metrics.port) == (True, 9191)
    assert seen.server_name == config.server_name and seen.database is config.database
    assert config.listeners.client.port == 8008 and config.listeners.metrics.enabled is False
    assert config_for_instance(config, plan_for(config.workers, "main")) is config
