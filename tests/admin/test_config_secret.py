"""Synapse's top-level names for the shared registration secret in homeserver.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ranvier.config import ConfigError, load_config, parse_config


def _base(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "server_name": "example.test",
        "signing_key_path": str(tmp_path / "signing.key"),
        "database": {"url": f"sqlite:///{tmp_path / 'db'}"},
        **extra,
    }


def test_top_level_secret_fills_registration_shared_secret(tmp_path: Path) -> None:
    config = parse_config(_base(tmp_path, registration_shared_secret="s3cret"))
    assert config.registration.shared_secret == "s3cret"
    # The same secret under both names is fine; two different ones are refused, naming both keys.
    same = parse_config(
        _base(tmp_path, registration_shared_secret="s3", registration={"shared_secret": "s3"})
    )
    assert same.registration.shared_secret == "s3"
    with pytest.raises(ConfigError, match="registration_shared_secret"):
        parse_config(_base(tmp_path, registration_shared_secret="a", registration={"shared_secret": "b"}))


def test_secret_path_is_read_or_created_relative_to_the_file(tmp_path: Path) -> None:
    config_file = tmp_path / "homeserver.yaml"
    config_file.write_text(yaml.safe_dump(_base(tmp_path, registration_shared_secret_path="secrets/reg")))
    created = load_config(config_file)
    secret_file = tmp_path / "secrets" / "reg"
    assert secret_file.exists() and (secret_file.stat().st_mode & 0o777) == 0o600
    assert created.registration.shared_secret == secret_file.read_text().strip()
    # Read again on the next start, not replaced.
    assert load_config(config_file).registration.shared_secret == created.registration.shared_secret
    secret_file.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        load_config(config_file)
