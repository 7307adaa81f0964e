"""The first start's self-signed federation certificate, made by a child interpreter for the server process
(ranvier.federation.tls.generate_self_signed_cert_in_child; issue 21: cryptography stays out of the
server's memory)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from ranvier.federation.tls import generate_self_signed_cert_in_child, server_ssl_context

REPO = Path(__file__).resolve().parents[2]


def test_the_child_writes_a_certificate_for_the_names_and_a_private_key(tmp_path: Path) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    generate_self_signed_cert_in_child(cert, key, dns_names=("hs.example", "localhost"))
    assert key.stat().st_mode & 0o077 == 0
    server_ssl_context(cert, key)  # the pair loads: the key matches the certificate
    sans = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert sans.value.get_values_for_type(x509.DNSName) == ["hs.example", "localhost"]
    assert [str(ip) for ip in sans.value.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]


def test_a_failure_in_the_child_is_raised_with_its_message(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="generating a self-signed certificate failed"):
        generate_self_signed_cert_in_child(tmp_path / "missing" / "tls.crt", tmp_path / "tls.key")


def test_the_server_process_does_not_import_cryptography_to_make_its_certificate(tmp_path: Path) -> None:
    """What ``ranvier run`` does on a first start (run_homeserver: certificate_in_child), in a fresh
    interpreter: the certificate is there once the server has started, and cryptography is not loaded."""
    probe = f"""
import asyncio, json, sys
from ranvier.app import Homeserver
from ranvier.config import parse_config
from tests.ports import free_port

async def main():
    d = {str(tmp_path)!r}
    port = free_port()
    config = parse_config({{
        "server_name": f"127.0.0.1:{{port}}", "data_dir": d, "signing_key_path": d + "/signing.key",
        "database": {{"url": "sqlite:///" + d + "/homeserver.db"}},
        "listeners": {{"client": {{"port": free_port()}}, "federation": {{"port": port, "tls": True}}}},
    }})
    hs = Homeserver(config, certificate_in_child=True)
    await hs.start()
    await hs.stop()
    print(json.dumps("cryptography" in sys.modules))

asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) is False
    assert (tmp_path / "tls.crt").exists() and (tmp_path / "tls.key").exists()
