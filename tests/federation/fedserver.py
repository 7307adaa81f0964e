"""A real Ranvier federation listener for tests: TLS on 127.0.0.1, our key routes, optional extra routes."""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from ranvier.federation.client import FederationClient
from ranvier.federation.ip_blocklist import IpBlocklist
from ranvier.federation.key_routes import add_key_routes
from ranvier.federation.keys import Keyring, KeyStore, Notary, OldKey
from ranvier.federation.tls import generate_self_signed_cert, server_ssl_context
from ranvier.protocol.signing import SigningKey

RouteSetup = Callable[[web.Application, Keyring], None]


@dataclass
class FedServer:
    server_name: str
    port: int
    keyring: Keyring
    client: FederationClient
    runner: web.AppRunner

    async def stop_listening(self) -> None:
        await self.runner.cleanup()

    async def close(self) -> None:
        await self.runner.cleanup()
        await self.client.close()


def make_client(server_name: str, key: SigningKey) -> FederationClient:
    # Loopback peers with self-signed certificates: skip verification, allow loopback.
    return FederationClient(server_name, key, verify_tls=False, blocklist=IpBlocklist(allow_loopback=True))


async def start_fed_server(
    tmp_path: Path,
    *,
    routes: RouteSetup | None = None,
    signing_key: SigningKey | None = None,
    old_keys: Sequence[OldKey] = (),
    notaries: Sequence[Notary] = (),
    store: KeyStore | None = None,
    key_routes: bool = True,
) -> FedServer:
    cert, key_file = tmp_path / "fed.crt", tmp_path / "fed.key"
    if not cert.exists():
        generate_self_signed_cert(cert, key_file)
    # Bind first so that the server name (which includes the port) is known before the keyring is built.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server_name = f"127.0.0.1:{port}"
    key = signing_key or SigningKey.generate("t1")
    client = make_client(server_name, key)
    keyring = Keyring(server_name, [key], old_keys=old_keys, client=client, store=store, notaries=notaries)
    app = web.Application()
    if key_routes:
        add_key_routes(app, keyring, server_name)
    if routes is not None:
        routes(app, keyring)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.SockSite(runner, sock, ssl_context=server_ssl_context(cert, key_file))
    await site.start()
    return FedServer(server_name, port, keyring, client, runner)
