"""Registration files: Synapse's format parsed, bad files refused naming file and field, overlaps warned."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ranvier.appservice.registration import (
    RegistrationError,
    literal_prefix,
    load_registrations,
    overlapping_exclusive_namespaces,
    parse_registration,
)
from ranvier.config import ConfigError, load_config

SYNAPSE_STYLE = {
    "id": "irc",
    "url": "http://127.0.0.1:9999",
    "as_token": "as-secret",
    "hs_token": "hs-secret",
    "sender_localpart": "ircbot",
    "namespaces": {
        "users": [{"exclusive": True, "regex": "@irc_.*:example\\.org"}],
        "aliases": [{"exclusive": False, "regex": "#irc_.*:example\\.org"}],
        "rooms": [],
    },
    "rate_limited": False,
    "protocols": ["irc"],
    "de.sorunome.msc2409.push_ephemeral": True,
    "org.matrix.msc3202": True,
}


def write(tmp_path: Path, name: str, data: Any) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_synapse_registration_is_parsed() -> None:
    s = parse_registration(SYNAPSE_STYLE, "example.org", "irc.yaml")
    assert s.sender == "@ircbot:example.org"
    assert s.owns_user_exclusively("@irc_alice:example.org")
    assert not s.owns_user_exclusively("@alice:example.org")
    # The whole id must match, not a prefix of it.
    assert not s.is_interested_in_user("@irc_alice:example.org.evil")
    assert s.is_interested_in_alias("#irc_chan:example.org")
    assert not s.owns_alias_exclusively("#irc_chan:example.org")
    assert s.receive_ephemeral and s.msc3202 and not s.rate_limited
    assert s.protocols == ("irc",)


def test_null_url_means_never_pushed() -> None:
    s = parse_registration({**SYNAPSE_STYLE, "url": None}, "example.org")
    assert s.url is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"as_token": None}, "as_token"),
        ({"hs_token": ""}, "hs_token"),
        ({"id": 5}, "id"),
        ({"sender_localpart": "@bot:example.org"}, "sender_localpart"),
        (
            {"namespaces": {"users": [{"exclusive": True, "regex": "@irc_(.*:example"}]}},
            "namespaces.users[0].regex",
        ),
        ({"namespaces": {"users": [{"exclusive": "yes", "regex": "@a"}]}}, "namespaces.users[0].exclusive"),
        ({"namespaces": {"people": []}}, "namespaces"),
        ({"url": "ftp://x"}, "url"),
        ({"rate_limited": "no"}, "rate_limited"),
    ],
)
def test_bad_registration_names_the_field(tmp_path: Path, change: dict[str, Any], field: str) -> None:
    path = write(tmp_path, "bad.yaml", {**SYNAPSE_STYLE, **change})
    with pytest.raises(RegistrationError) as e:
        load_registrations([path], "example.org")
    assert path in str(e.value) and field in str(e.value)


@pytest.mark.parametrize("key", ["id", "as_token", "hs_token"])
def test_duplicates_are_refused(tmp_path: Path, key: str) -> None:
    first = write(tmp_path, "a.yaml", SYNAPSE_STYLE)
    other = {"id": "other", "as_token": "as2", "hs_token": "hs2", key: SYNAPSE_STYLE[key]}
    second = write(tmp_path, "b.yaml", {**SYNAPSE_STYLE, **other})
    with pytest.raises(RegistrationError) as e:
        load_registrations([first, second], "example.org")
    assert second in str(e.value) and key in str(e.value) and first in str(e.value)


def test_overlapping_exclusive_namespaces_are_warned(tmp_path: Path) -> None:
    a = parse_registration(SYNAPSE_STYLE, "example.org", "a.yaml")
    b = parse_registration(
        {**SYNAPSE_STYLE, "id": "b", "as_token": "x", "hs_token": "y"}, "example.org", "b.yaml"
    )
    warnings = overlapping_exclusive_namespaces([a, b])
    assert any("@irc_.*:example\\.org" in w and "a.yaml" in w and "b.yaml" in w for w in warnings)
    c = parse_registration(
        {**SYNAPSE_STYLE, "id": "c", "as_token": "x2", "hs_token": "y2", "namespaces": {}}, "example.org"
    )
    assert overlapping_exclusive_namespaces([a, c]) == []


def test_homeserver_yaml_refuses_a_bad_registration(tmp_path: Path) -> None:
    reg = write(tmp_path, "irc.yaml", {**SYNAPSE_STYLE, "hs_token": None})
    hs = tmp_path / "homeserver.yaml"
    hs.write_text(
        yaml.safe_dump(
            {
                "server_name": "example.org",
                "signing_key_path": "signing.key",
                "database": {"url": "sqlite:///hs.db"},
                "app_service_config_files": ["irc.yaml"],
            }
        )
    )
    with pytest.raises(ConfigError) as e:
        load_config(hs)
    assert "app_service_config_files" in str(e.value) and reg in str(e.value) and "hs_token" in str(e.value)
    Path(reg).write_text(yaml.safe_dump(SYNAPSE_STYLE))
    assert load_config(hs).app_service_config_files == [reg]


@pytest.mark.parametrize(
    ("pattern", "prefix"),
    [
        ("@irc_.*", "@irc_"),
        ("@irc_.*:example\\.org", "@irc_"),
        ("^@_discord_[0-9]+:example\\.org", "@_discord_"),
        ("@tele\\.gram_.*", "@tele.gram_"),
        ("@a?b", "@"),  # "a" may be absent
        ("@b{2}", "@"),
        ("@x+y", "@x"),
        ("(?i)@irc_.*", ""),  # case-insensitive: no literal prefix
        ("@a_.*|@b_.*", ""),  # alternation
        (".*", ""),
    ],
)
def test_literal_prefix_is_conservative(pattern: str, prefix: str) -> None:
    assert literal_prefix(pattern) == prefix
    # Every sample the regex matches starts with the prefix.
    for sample in (
        "@irc_bob",
        "@irc_bob:example.org",
        "@_discord_12:example.org",
        "@tele.gram_x",
        "@b",
        "@ab",
        "@bb",
        "@xxy",
        "@IRC_bob",
        "@a_1",
        "@b_1",
        "anything",
    ):
        if re.fullmatch(pattern, sample):
            assert sample.startswith(prefix), (pattern, sample)
