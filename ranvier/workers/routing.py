"""Which process role serves which HTTP request in a multi-process deployment: the routing table, as data.

One ordered list of routes (first match wins) feeds everything that routes: the table in ``docs/workers.md``,
the nginx example in ``contrib/nginx/``, the layouts ``ranvier generate-config --workers N`` writes, and the
routing proxy of the deployment tests. A test checks that the rendered files agree with this list and that
every route a Ranvier process registers resolves to a role whose process serves it.

Only roles with HTTP listeners appear here (event persisters, federation senders and background workers take
no outside requests). A role with no instance in a deployment falls back to the main process, which serves
every route: "any role may run in the main process".

Patterns match the decoded request path (nginx's ``$uri``, aiohttp's ``request.path``). They are written to
mean the same in Python's ``re`` and in PCRE (nginx), so the two agree: no lookarounds, no named groups.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

HttpRole = Literal["main", "client_reader", "federation_inbound", "media"]
Listener = Literal["client", "federation"]

HTTP_ROLES: Final[tuple[HttpRole, ...]] = ("main", "client_reader", "federation_inbound", "media")
READ_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})

# Every client API version prefix Ranvier registers (r0, v1, v3, unstable and the old api/v1).
_CS: Final = "/_matrix/client/[^/]+"
_CS_ROOM: Final = _CS + "/rooms/[^/]+"


@dataclass(frozen=True)
class Route:
    """Requests whose path matches ``pattern`` (anchored at the start) and, if ``methods`` is set, whose
    method is one of them, go to ``role``. ``why`` is shown in the docs."""

    pattern: str
    role: HttpRole
    why: str
    methods: frozenset[str] | None = None
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.pattern.startswith("^"):
            raise ValueError(f"route pattern {self.pattern!r}: anchoring is implied, do not write '^'")
        if '"' in self.pattern or "'" in self.pattern:
            raise ValueError(f"route pattern {self.pattern!r}: quotes cannot be rendered for nginx")
        object.__setattr__(self, "regex", re.compile("^" + self.pattern))

    def matches(self, method: str, path: str) -> bool:
        if self.methods is not None and method.upper() not in self.methods:
            return False
        return self.regex.match(path) is not None

    @property
    def listener(self) -> Listener:
        return "federation" if self.role == "federation_inbound" else "client"


ROUTES: Final[tuple[Route, ...]] = (
    # -- federation: the other servers' requests, on the federation listener -------------------------------
    Route(
        "/_matrix/federation/",
        "federation_inbound",
        "server-server API: /send transactions (PDUs forwarded to each room's persister), joins, backfill, "
        "state and event reads, device and key queries",
    ),
    Route("/_matrix/key/", "federation_inbound", "our signing keys and the notary API"),
    # -- media: uploads, downloads, thumbnails (the content repository's disk) -----------------------------
    Route("/_matrix/media/", "media", "the legacy and unauthenticated media API, uploads and /create"),
    Route(
        "/_matrix/client/v1/media/", "media", "authenticated media (downloads, thumbnails, config, previews)"
    ),
    # -- client reads: served from PostgreSQL, woken by the replication bus --------------------------------
    Route(
        _CS + "/(sync|events|initialSync)$",
        "client_reader",
        "long-polls woken over the bus by writes of any process",
        READ_METHODS,
    ),
    Route(
        _CS + "/org\\.matrix\\.simplified_msc3575/sync$",
        "client_reader",
        "simplified sliding sync, a long-poll like /sync",
        frozenset({"POST", "OPTIONS"}),
    ),
    Route(
        _CS_ROOM
        + "/(messages|context|event|members|joined_members|state|initialSync|relations|threads|hierarchy"
        + "|timestamp_to_event|aliases)(/|$)",
        "client_reader",
        "room reads: timeline pages, events, members, state, relations",
        READ_METHODS,
    ),
    Route(_CS + "/events/[^/]+$", "client_reader", "an event by id (legacy)", READ_METHODS),
    Route(
        _CS + "/(joined_rooms|publicRooms|room_summary/|im\\.nheko\\.summary/|mutual_rooms)",
        "client_reader",
        "room lists and summaries",
        READ_METHODS,
    ),
    Route(_CS + "/(search|user_directory/search)$", "client_reader", "full-text and user directory search"),
    Route(
        _CS + "/(notifications|keys/changes)$",
        "client_reader",
        "notification and key-change reads",
        READ_METHODS,
    ),
    # -- room writes: any process takes them and forwards the event to the room's persister ----------------
    Route(
        _CS_ROOM + "/(send|state|redact)/",
        "client_reader",
        "event sends, state and redactions: built here, persisted by the room's event persister",
        frozenset({"PUT", "POST", "OPTIONS"}),
    ),
    Route(
        _CS_ROOM + "/(join|leave|invite|kick|ban|unban|forget)$",
        "client_reader",
        "membership changes, forwarded to the room's persister like any event",
    ),
    Route(
        _CS + "/(join|knock)/",
        "client_reader",
        "joins by id or alias (remote joins included), forwarded to the room's persister",
    ),
    # -- everything else: accounts, devices, keys, typing/presence owners, push rules, admin ---------------
)


def route_for(method: str, path: str) -> Route | None:
    """The first route matching the request, or None: then the main process serves it."""
    for route in ROUTES:
        if route.matches(method, path):
            return route
    return None


def role_for(method: str, path: str) -> HttpRole:
    """The role that serves a request (main when no route says otherwise)."""
    route = route_for(method, path)
    return "main" if route is None else route.role


def instance_role(role: HttpRole, deployed: Mapping[HttpRole, Sequence[str]]) -> HttpRole:
    """The role whose instances serve ``role`` in a deployment: itself if it has instances, else main."""
    return role if deployed.get(role) else "main"


# -- rendering: the docs table and the nginx example ---------------------------------------------------------


def _methods_label(route: Route) -> str:
    return "any" if route.methods is None else ", ".join(sorted(route.methods))


def render_markdown_table() -> str:
    """The routing table as Markdown (first match wins; unmatched paths go to main)."""
    lines = ["| # | path (regex, anchored at the start) | methods | role | why |", "|---|---|---|---|---|"]
    for number, route in enumerate(ROUTES, 1):
        pattern = route.pattern.replace("|", "\\|")
        lines.append(f"| {number} | `^{pattern}` | {_methods_label(route)} | {route.role} | {route.why} |")
    rest = "accounts, devices, keys, typing, presence, push rules, admin APIs, createRoom"
    lines.append(f"| {len(ROUTES) + 1} | anything else | any | main | {rest} |")
    return "\n".join(lines) + "\n"


def nginx_map_key(route: Route) -> str:
    """The regex a route becomes in nginx's ``map "$request_method $uri"``."""
    methods = "[A-Z]+" if route.methods is None else "(" + "|".join(sorted(route.methods)) + ")"
    return f"^{methods} {route.pattern}"


def upstream_name(role: HttpRole, listener: Listener) -> str:
    return f"ranvier_{role}_{listener}"


@dataclass(frozen=True)
class NginxLayout:
    """What the nginx example needs to know of a deployment: each HTTP role's upstream addresses
    (host:port of its client or federation listener) and the ports and certificate nginx serves on."""

    client_upstreams: Mapping[HttpRole, Sequence[str]]
    federation_upstreams: Mapping[HttpRole, Sequence[str]]
    client_listen: int = 8008
    federation_listen: int = 8448
    tls_certificate: str = "/etc/ranvier/tls.crt"
    tls_certificate_key: str = "/etc/ranvier/tls.key"
    listen_address: str | None = None  # None: every interface (a public server); tests use 127.0.0.1


def _target(route_role: HttpRole, listener: Listener, layout: NginxLayout) -> str:
    upstreams = layout.federation_upstreams if listener == "federation" else layout.client_upstreams
    return upstream_name(instance_role(route_role, upstreams), listener)


def render_nginx(layout: NginxLayout) -> str:
    """An nginx ``http {}`` fragment (for conf.d/) routing Ranvier's requests per ``ROUTES``."""
    out: list[str] = [
        "# Ranvier workers: generated from ranvier/workers/routing.py (ROUTES); do not edit by hand,",
        "# regenerate with `ranvier generate-config --workers N` (or see docs/workers.md).",
        "# First matching regex wins (nginx checks a map's regexes in the order written).",
        "",
    ]
    listeners: tuple[tuple[Listener, Mapping[HttpRole, Sequence[str]]], ...] = (
        ("client", layout.client_upstreams),
        ("federation", layout.federation_upstreams),
    )
    for listener, upstreams in listeners:
        for role in HTTP_ROLES:
            addresses = upstreams.get(role) or ()
            if not addresses:
                continue
            out.append(f"upstream {upstream_name(role, listener)} {{")
            if len(addresses) > 1:
                # One user's requests stay on one process (its /sync position and caches stay warm there).
                out.append("    hash $http_authorization$arg_access_token consistent;")
            out += [f"    server {address};" for address in addresses]
            out += ["    keepalive 32;", "}", ""]
    if not layout.client_upstreams.get("main") or not layout.federation_upstreams.get("main"):
        raise ValueError("the main process must have a client and a federation upstream")
    for listener, _ in listeners:
        variable = f"$ranvier_{listener}_upstream"
        out.append(f'map "$request_method $uri" {variable} {{')
        for route in ROUTES:
            if route.listener != listener:
                continue  # federation paths are served on the federation listener only, the rest on client
            target = _target(route.role, listener, layout)
            out.append(f'    "~{nginx_map_key(route)}" {target};')
        out.append(f"    default {upstream_name('main', listener)};")
        out += ["}", ""]
    proxy_common = [
        "        proxy_set_header Host $host;",
        "        proxy_set_header X-Forwarded-For $remote_addr;",
        "        proxy_set_header X-Forwarded-Proto $scheme;",
        "        proxy_http_version 1.1;",
        '        proxy_set_header Connection "";',
        "        # /sync long-polls for up to its timeout (clients ask 30 s); media uploads are large.",
        "        proxy_read_timeout 120s;",
        "        client_max_body_size 100M;",
    ]
    listen = "" if layout.listen_address is None else f"{layout.listen_address}:"
    out += [
        "server {",
        f"    listen {listen}{layout.client_listen};",
        "    location / {",
        "        proxy_pass http://$ranvier_client_upstream;",
        *proxy_common,
        "    }",
        "}",
        "",
        "server {",
        f"    listen {listen}{layout.federation_listen} ssl;",
        f"    ssl_certificate {layout.tls_certificate};",
        f"    ssl_certificate_key {layout.tls_certificate_key};",
        "    location / {",
        "        # Ranvier's federation listeners speak TLS themselves (self-signed on loopback).",
        "        proxy_pass https://$ranvier_federation_upstream;",
        "        proxy_ssl_verify off;",
        *proxy_common,
        "    }",
        "}",
    ]
    return "\n".join(out) + "\n"


_MAP_LINE = re.compile(r'^\s*"~\^(?P<methods>\S+) (?P<pattern>[^"]+)" (?P<upstream>\w+);$')


def parse_nginx_maps(text: str) -> dict[str, list[tuple[str, str, str]]]:
    """The (methods regex, path pattern, upstream) entries of each ``map`` in an nginx file, in order:
    what the consistency test reads back from the checked-in example."""
    maps: dict[str, list[tuple[str, str, str]]] = {}
    current: list[tuple[str, str, str]] | None = None
    for line in text.splitlines():
        header = re.match(r'^map "\$request_method \$uri" \$(\w+) \{$', line)
        if header:
            current = maps.setdefault(header.group(1), [])
            continue
        if line.strip() == "}":
            current = None
            continue
        if current is not None:
            entry = _MAP_LINE.match(line)
            if entry:
                current.append((entry.group("methods"), entry.group("pattern"), entry.group("upstream")))
            elif line.strip().startswith("default "):
                current.append(("default", "", line.split()[1].rstrip(";")))
    return maps
