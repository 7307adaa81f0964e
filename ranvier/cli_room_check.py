"""``ranvier room-check ROOM_ID``: asks a running server (its admin API) to compare the room with every
server in it, prints the report, and with ``--heal`` lets the server fetch what it lacks and queue what the
others lack. Exit status: 0 when every server agrees, 1 when something differs, 2 on a usage error."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


def _print_report(report: dict[str, Any]) -> None:
    print(f"room {report['room_id']}: {'agrees' if report['agrees'] else 'DIFFERS'}")
    print(f"  our forward extremities: {', '.join(report['our_extremities']) or '(none)'}")
    if not report["servers"]:
        print("  no other server is in the room")
    for server in report["servers"]:
        state = "agrees" if server["agrees"] else "differs"
        print(f"  {server['server']}: {state}")
        if "error" in server:
            print(f"    error: {server['error']}")
        if server["extremities"] is None:
            print("    (no MSC4370 extremities endpoint: its newest events are not known)")
        for anchor, divergences in server["divergent_state"].items():
            for d in divergences:
                print(
                    f"    state before {anchor}: ({d['type']}, {d['state_key']!r}) "
                    f"ours {d['ours']} theirs {d['theirs']}"
                )
        for event_id in server["events_we_lack"]:
            print(f"    we lack {event_id}")
        for event_id in server["events_they_lack"]:
            print(f"    they lack {event_id}")
        if "healed" in server:
            print(f"    healed: {json.dumps(server['healed'])}")


def cmd_room_check(args: argparse.Namespace, default_base: str | None) -> int:
    token = args.access_token or os.environ.get("RANVIER_ADMIN_TOKEN")
    if not token:
        print("an admin access token is needed: --access-token or RANVIER_ADMIN_TOKEN", file=sys.stderr)
        return 2
    base = args.url or default_base
    if base is None:
        print("give --url or -c homeserver.yaml", file=sys.stderr)
        return 2
    room = urllib.parse.quote(args.room_id, safe="")
    req = urllib.request.Request(
        f"{base.rstrip('/')}/_ranvier/admin/v1/rooms/{room}/check",
        data=json.dumps({"heal": args.heal}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=args.timeout) as resp:
            report = json.load(resp)
    except urllib.error.HTTPError as e:
        print(f"room check failed: {e.code} {e.read().decode(errors='replace')}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"cannot reach the server at {base}: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report)
    return 0 if report["agrees"] else 1


def add_parser(sub: Any) -> argparse.ArgumentParser:
    check: argparse.ArgumentParser = sub.add_parser(
        "room-check", help="compare a room's state and events with every server in it (admin API)"
    )
    check.add_argument("room_id")
    check.add_argument("-c", "--config", help="homeserver.yaml (for the client API address)")
    check.add_argument("--url", help="client API base URL (default from the config)")
    check.add_argument("--access-token", help="an admin's access token (or RANVIER_ADMIN_TOKEN)")
    check.add_argument("--heal", action="store_true", help="fetch what we lack, queue what they lack")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--timeout", type=float, default=120.0)
    return check
