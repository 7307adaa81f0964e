"""TLS helpers: self-signed certificates for tests and development, and the server/client SSL contexts.

Production deployments use a CA-signed certificate (S2S "TLS"); a self-signed one only works with peers
that skip verification for us (Synapse's ``federation_verify_certificates: false``, our ``verify_tls``).
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import ssl
import subprocess
import sys
from pathlib import Path


def generate_self_signed_cert(
    cert_path: Path | str,
    key_path: Path | str,
    *,
    dns_names: tuple[str, ...] = ("localhost",),
    ip_addresses: tuple[str, ...] = ("127.0.0.1", "::1"),
    days: int = 365,
) -> None:
    """Write a PEM certificate and unencrypted PEM key whose subjectAltName covers the given names and
    IPs (an IP-literal server name must be in the SAN as an IP, S2S "Resolving server names" step 1)."""
    # Imported here: only a first start without a certificate (and tests) generate one, and cryptography
    # costs every other start of the server about 7 MB of RSS.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    # RSA rather than EC: every TLS stack a peer might run (Twisted/pyOpenSSL, Go, Rust) accepts it.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    common_name = ip_addresses[0] if ip_addresses else dns_names[0]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    Path(cert_path).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    Path(key_path).write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    Path(key_path).chmod(0o600)


def generate_self_signed_cert_in_child(
    cert_path: Path | str, key_path: Path | str, *, dns_names: tuple[str, ...] = ("localhost",)
) -> None:
    """``generate_self_signed_cert`` run by a child interpreter (``python -m ranvier.federation.tls``), for
    the server's first start: cryptography, once imported, keeps about 10 MB of the process's memory for
    good (issue 21: a first start without a certificate was 67 MB of RSS, a restart 56), and the server
    itself has no other use for it. Blocking, as generating the key is: once, before the listener opens."""
    done = subprocess.run(
        [sys.executable, "-m", "ranvier.federation.tls", str(cert_path), str(key_path), *dns_names],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"generating a self-signed certificate failed: {done.stderr.strip()[-2000:]}")


def server_ssl_context(cert_path: Path | str, key_path: Path | str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert_path), str(key_path))
    return ctx


def client_ssl_context(verify: bool, cafile: Path | str | None = None) -> ssl.SSLContext:
    """Verification against the system trust store (S2S "TLS": rely on the OS's judgement), optionally
    with an extra CA file; ``verify=False`` is for tests and closed networks only."""
    ctx = ssl.create_default_context(cafile=str(cafile) if cafile is not None else None)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python3 -m ranvier.federation.tls", description="Write a self-signed certificate and its key."
    )
    parser.add_argument("cert_path")
    parser.add_argument("key_path")
    parser.add_argument("dns_names", nargs="+")
    args = parser.parse_args(argv)
    generate_self_signed_cert(args.cert_path, args.key_path, dns_names=tuple(args.dns_names))


if __name__ == "__main__":
    main(sys.argv[1:])
