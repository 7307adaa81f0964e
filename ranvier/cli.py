"""The ``ranvier`` command: generate-config, run, register-user, quickstart, room-check.

Exit codes: 0 success, 1 runtime failure, 2 invalid usage or configuration (nothing started).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import hashlib
import hmac
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from .cli_room_check import add_parser as add_room_check_parser
from .cli_room_check import cmd_room_check
from .config import ConfigError, HomeserverConfig, load_config, parse_config, render_config
from .logs.configure import LogConfigError, apply_log_config, apply_log_level, render_default_log_config
from .logs.tracing import TracingError
from .logs.tracing import check_environment as check_tracing_environment
from .workers.layout import layout_for_workers, workers_config_text, write_layout_files


def _cmd_generate_config(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir)
    path = Path(args.output) if args.output else data_dir / "homeserver.yaml"
    if path.exists() and not args.force:
        print(f"{path} exists; pass --force to overwrite", file=sys.stderr)
        return 2
    # The logging config goes beside homeserver.yaml, named as Synapse names it.
    log_config = path.parent / f"{args.server_name.replace(':', '_')}.log.config"
    layout = None
    if args.workers is not None and args.workers < 0:
        print("--workers: the number of worker processes cannot be negative", file=sys.stderr)
        return 2
    if args.workers is not None:
        # Behind nginx on the public ports; every process on its own internal ports (ranvier.workers.layout).
        layout = layout_for_workers(
            args.workers,
            server_name=args.server_name,
            public_client_port=args.client_port,
            public_federation_port=args.federation_port,
            internal_port_base=args.internal_port_base,
        )
    try:
        text = render_config(
            args.server_name,
            client_port=args.client_port if layout is None else layout.main_client_port,
            federation_port=args.federation_port if layout is None else layout.main_federation_port,
            metrics_port=args.metrics_port,
            registration_enabled=args.enable_registration,
            verify_tls=not args.no_verify_tls,
            allow_loopback=args.allow_loopback,
            log_config=log_config.name,
        )
        if layout is not None:
            text = workers_config_text(text, layout, database_url=args.database_url, redis_url=args.redis_url)
            parse_config(yaml.safe_load(text))  # what is written must load
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path}")
    if layout is not None:
        for written in write_layout_files(path.parent, layout, path, force=args.force):
            print(f"wrote {written}")
        print("processes: " + ", ".join(f"{i.name} ({i.role})" for i in layout.instances))
    if not log_config.exists() or args.force:
        log_config.write_text(render_default_log_config(path.parent.resolve() / "homeserver.log"))
        print(f"wrote {log_config}")
    return 0


def _load(path: str) -> HomeserverConfig | None:
    try:
        return load_config(path)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return None


def _setup_logging(config: HomeserverConfig) -> bool:
    """log_config when set (a file that cannot be applied is reported, naming it), else log_level."""
    if config.log_config is None:
        apply_log_level(config.log_level)
        return True
    try:
        apply_log_config(config.log_config)
    except LogConfigError as e:
        print(str(e), file=sys.stderr)
        return False
    return True


def _run(config: HomeserverConfig, worker: str = "main") -> int:
    if not _setup_logging(config):
        return 2
    try:
        check_tracing_environment()
    except TracingError as e:
        print(str(e), file=sys.stderr)
        return 2
    from .app import run_homeserver

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_homeserver(config, worker))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 2
    worker = args.worker or "main"
    if worker != "main" and (config.workers is None or worker not in config.workers.instances):
        print(f"--worker {worker}: not an instance of workers.instances in {args.config}", file=sys.stderr)
        return 2
    return _run(config, worker)


def _cmd_quickstart(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir)
    path = data_dir / "homeserver.yaml"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        text = render_config(
            args.server_name,
            client_port=args.client_port,
            federation_port=args.federation_port,
            registration_enabled=True,
        )
        path.write_text(text)
        print(f"wrote {path} (open registration: this is a local quick start)")
    config = _load(str(path))
    if config is None:
        return 2
    print(
        f"Ranvier {config.server_name}: client API on http://{config.listeners.client.bind}:"
        f"{config.listeners.client.port}, federation on port {config.listeners.federation.port}"
    )
    return _run(config)


def _cmd_register_user(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 2
    password = args.password or getpass.getpass("Password: ")
    if args.database:
        return asyncio.run(_register_in_database(config, args.user, password, args.admin))
    if not config.registration.shared_secret:
        print(
            "registration.shared_secret is not set; use --database to write to the database", file=sys.stderr
        )
        return 2
    base = args.url or f"http://{config.listeners.client.bind}:{config.listeners.client.port}"
    endpoint = base.rstrip("/") + "/_synapse/admin/v1/register"
    try:
        with urllib.request.urlopen(endpoint, timeout=10) as resp:
            nonce = json.load(resp)["nonce"]
        mac = hmac.new(config.registration.shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(
            b"\x00".join(
                [
                    nonce.encode(),
                    args.user.encode(),
                    password.encode(),
                    b"admin" if args.admin else b"notadmin",
                ]
            )
        )
        body = {"nonce": nonce, "username": args.user, "password": password, "admin": args.admin}
        body["mac"] = mac.hexdigest()
        req = urllib.request.Request(
            endpoint,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            print(f"registered {json.load(resp)['user_id']}")
        return 0
    except urllib.error.HTTPError as e:
        print(f"registration failed: {e.code} {e.read().decode(errors='replace')}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"cannot reach the server at {base}: {e}", file=sys.stderr)
        return 1


async def _register_in_database(config: HomeserverConfig, localpart: str, password: str, admin: bool) -> int:
    from .protocol.identifiers import is_valid_localpart
    from .storage import open_storage
    from .storage.protocols.accounts import UserExists

    # The same mapping and checks as /register: lower-cased, and only the characters a user id allows.
    localpart = localpart.lower()
    if not is_valid_localpart(localpart):
        print(f"invalid user name {localpart!r}: only a-z, 0-9 and '._=-/+' are allowed", file=sys.stderr)
        return 2
    storage = await open_storage(config.database.url)
    try:
        user_id = f"@{localpart}:{config.server_name}"
        try:
            await storage.users.create_user(user_id, password, is_admin=admin)
        except UserExists:
            print(f"{user_id} already exists", file=sys.stderr)
            return 1
        print(f"registered {user_id}")
        return 0
    finally:
        await storage.db.close()


def _cmd_room_check(args: argparse.Namespace) -> int:
    base = None
    if args.config:
        config = _load(args.config)
        if config is None:
            return 2
        base = f"http://{config.listeners.client.bind}:{config.listeners.client.port}"
    return cmd_room_check(args, base)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ranvier", description="Ranvier Matrix homeserver")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate-config", help="write a commented homeserver.yaml")
    gen.add_argument("--server-name", required=True)
    gen.add_argument("--data-dir", default=".")
    gen.add_argument("-o", "--output", help="file to write (default DATA_DIR/homeserver.yaml)")
    gen.add_argument("--client-port", type=int, default=8008)
    gen.add_argument("--federation-port", type=int, default=8448)
    gen.add_argument("--metrics-port", type=int, default=9090)
    gen.add_argument("--enable-registration", action="store_true")
    gen.add_argument("--no-verify-tls", action="store_true", help="do not check peers' TLS certificates")
    gen.add_argument("--allow-loopback", action="store_true", help="allow federation to loopback addresses")
    gen.add_argument("--force", action="store_true")
    gen.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="a multi-process layout: main plus N workers, with nginx, systemd units and a compose file",
    )
    gen.add_argument("--database-url", default="postgresql://ranvier@127.0.0.1:5432/ranvier")
    gen.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    gen.add_argument("--internal-port-base", type=int, default=18000, help="first port of the processes")
    gen.set_defaults(func=_cmd_generate_config)

    run = sub.add_parser("run", help="start the homeserver")
    run.add_argument("-c", "--config", required=True)
    run.add_argument("--worker", help="the instance of workers.instances to run (default: main)")
    run.set_defaults(func=_cmd_run)

    quick = sub.add_parser("quickstart", help="create a local config in DATA_DIR if needed, then run")
    quick.add_argument("--data-dir", default="./data")
    quick.add_argument("--server-name", default="localhost")
    quick.add_argument("--client-port", type=int, default=8008)
    quick.add_argument("--federation-port", type=int, default=8448)
    quick.set_defaults(func=_cmd_quickstart)

    reg = sub.add_parser("register-user", help="create a user on a running server (or in its database)")
    reg.add_argument("-c", "--config", required=True)
    reg.add_argument("--user", required=True, help="localpart")
    reg.add_argument("--password")
    reg.add_argument("--admin", action="store_true")
    reg.add_argument("--url", help="client API base URL (default from the config)")
    reg.add_argument(
        "--database", action="store_true", help="write to the database directly (server stopped)"
    )
    reg.set_defaults(func=_cmd_register_user)

    add_room_check_parser(sub).set_defaults(func=_cmd_room_check)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
