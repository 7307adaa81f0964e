"""homeserver.yaml: the schema, validation with errors that name the key, and generation.

Each section is a dataclass read by ``config_schema.read_section``, so that an invalid file yields
"listeners.client.port: ..." rather than a stack trace; the CLI turns ConfigError into exit code 2 before
anything is started.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .config_schema import Invalid, Problems, read_section, setting
from .protocol.identifiers import is_valid_server_name
from .protocol.room_versions import DEFAULT_ROOM_VERSION, KNOWN_ROOM_VERSIONS
from .workers.config import Redis, Workers, check_workers


class ConfigError(Exception):
    pass


@dataclass(kw_only=True)
class ClientListener:
    bind: str = "127.0.0.1"
    port: int = setting(8008, ge=0, le=65535)
    # Synapse's x_forwarded: a reverse proxy in front sets X-Forwarded-For, which the request log then
    # reports as the client's address. Leave off unless every request comes through such a proxy.
    x_forwarded: bool = False


@dataclass(kw_only=True)
class FederationListener:
    bind: str = "127.0.0.1"
    port: int = setting(8448, ge=0, le=65535)
    # TLS on by default; off when a reverse proxy terminates TLS in front of us.
    tls: bool = True
    tls_certificate_path: str | None = None
    tls_private_key_path: str | None = None
    x_forwarded: bool = False


@dataclass(kw_only=True)
class MetricsListener:
    enabled: bool = False
    bind: str = "127.0.0.1"
    port: int = setting(9090, ge=0, le=65535)
    x_forwarded: bool = False


@dataclass(kw_only=True)
class Listeners:
    client: ClientListener = field(default_factory=ClientListener)
    federation: FederationListener = field(default_factory=FederationListener)
    metrics: MetricsListener = field(default_factory=MetricsListener)


def _known_scheme(v: str) -> str:
    if not (v.startswith("sqlite://") or v.startswith("postgresql://") or v.startswith("postgres://")):
        raise ValueError("must start with sqlite:// or postgresql://")
    return v


@dataclass(kw_only=True)
class Database:
    # sqlite:///path/to/file.db (the default) or postgresql://user@host:port/dbname
    url: str = setting(check=_known_scheme)


@dataclass(kw_only=True)
class Registration:
    enabled: bool = False
    # Synapse's registration_requires_token: registering takes a token from the admin API
    # (/_synapse/admin/v1/registration_tokens), the m.login.registration_token UIA stage.
    requires_token: bool = False
    # Shared secret for the admin registration API (/_synapse/admin/v1/register-compatible).
    shared_secret: str | None = None


@dataclass(kw_only=True)
class TrustedKeyServer:
    # Synapse's shape: the notary's name and, optionally, its verify keys (key id -> unpadded base64);
    # without them its own keys are fetched from it directly.
    server_name: str
    verify_keys: dict[str, str] | None = None


def _host_port_overrides(v: dict[str, str]) -> dict[str, str]:
    for name, target in v.items():
        host, sep, port = target.rpartition(":")
        if not is_valid_server_name(name) or not sep or not host or not port.isdigit():
            raise ValueError(f"{name!r}: {target!r} must map a server name to host:port")
    return v


@dataclass(kw_only=True)
class Federation:
    enabled: bool = True
    verify_tls: bool = True
    # Outbound requests to private, loopback and link-local addresses are refused unless allowed here.
    allow_loopback: bool = False
    ip_range_blocklist: list[str] | None = None
    # Notaries (S2S "Querying Keys Through Another Server") asked for a server's keys when that server
    # cannot be reached directly: server names, or {server_name, verify_keys} as in Synapse.
    trusted_key_servers: list[str | TrustedKeyServer] = field(default_factory=list)
    # Outbound back-off towards a server that fails (seconds): doubling from the first value up to the second.
    # Bounded, so a healed link is used again within minutes; a validly signed request from that server
    # resets it to zero at once.
    retry_initial_backoff: float = setting(5.0, gt=0, le=600)
    retry_max_backoff: float = setting(120.0, gt=0, le=3600)
    # How long one outbound transaction may take before it is retried (same id; the receiver answers a
    # repeat without handling it twice). Bounds what a link that silently drops packets can hold up.
    transaction_timeout: float = setting(30.0, gt=0, le=600)
    # After an outage every queued event is sent, in order; a room whose backlog for one server exceeds this
    # many events sends only its newest ones and leaves the rest for that server to fetch.
    catchup_max_per_room: int = setting(2000, ge=50)
    # A gap in a room's timeline (events we learnt of but could not fetch at once) is filled in the
    # background with /backfill, up to this many events per gap-filling episode (0: only when a client
    # pages to it).
    gap_fill_max_events: int = setting(10000, ge=0)
    # Whether other servers see our users' device display names (in device list updates, /user/devices
    # and /user/keys/query). Off by default, as Synapse's allow_device_name_lookup_over_federation: a
    # device name ("Alice's work laptop") tells every server in every shared room more than it needs.
    allow_device_name_lookup_over_federation: bool = False
    # Test-only: connect to these servers at a fixed "host:port" instead of resolving their names (the chaos
    # harness routes each link through its own TCP proxy this way). The Host header and the X-Matrix
    # destination stay the server name. Leave empty in production.
    host_overrides: dict[str, str] = setting(factory=dict, check=_host_port_overrides)  # noqa: RUF009 - a dataclasses.field


@dataclass(kw_only=True)
class KeyFetch:
    # Seconds one request for a server's keys (to it, or to a notary) may take before we give up on it.
    timeout: float = setting(5.0, gt=0, le=60)
    # After a failed fetch, a server's keys are fetched again on demand after a short back-off that
    # doubles from one second up to this many seconds (with jitter); a request signed by that server
    # fetches them again at once (at most once a second).
    retry_max: float = setting(30.0, ge=1, le=3600)


@dataclass(kw_only=True)
class RequestLimits:
    """Per listener: how long a request may take to arrive, how big it may be, and how many connections
    and unauthenticated bodies may be held (ranvier.http_limits)."""

    header_timeout: float = setting(20.0, gt=0, le=600)
    body_timeout: float = setting(60.0, gt=0, le=3600)
    idle_timeout: float = setting(60.0, gt=0, le=3600)
    max_connections: int = setting(4096, ge=8)
    max_client_body_bytes: int = setting(1024 * 1024, ge=1024)
    max_federation_send_body_bytes: int = setting(8 * 1024 * 1024, ge=64 * 1024)
    max_federation_body_bytes: int = setting(1024 * 1024, ge=64 * 1024)
    max_unauthenticated_bodies: int = setting(256, ge=1)
    max_unauthenticated_body_bytes: int = setting(64 * 1024 * 1024, ge=1024 * 1024)


def _known_version(v: str) -> str:
    if v not in KNOWN_ROOM_VERSIONS:
        raise ValueError(f"unknown room version {v!r}")
    return v


@dataclass(kw_only=True)
class Rooms:
    default_room_version: str = setting(DEFAULT_ROOM_VERSION, check=_known_version)
    # Tie forward extremities together with a dummy event once a room has more than this many.
    max_forward_extremities: int = setting(10, ge=2)
    # Resident side of the join-gap fix; switch off only to test the joiner-side detection.
    join_gap_dummy_event: bool = True
    # Joining over federation asks send_join for partial state (omit_members, MSC3706): the room is usable
    # at once and the members arrive in the background. Off: every remote join takes the full state.
    partial_state_joins: bool = True
    # The background resync of a partial-state room retries with back-off between these bounds (seconds).
    partial_state_retry_initial: float = setting(2.0, gt=0)
    partial_state_retry_max: float = setting(600.0, gt=0)
    # How long /members and /joined_members of a partial-state room wait for the full state before
    # answering with the members known so far (seconds).
    partial_state_members_wait: float = setting(60.0, ge=0)
    # How long an initial /sync without lazy-loading waits for partial-state rooms in their first resync
    # attempt before leaving them out (seconds; rooms whose resync failed before are not waited for).
    partial_state_sync_wait: float = setting(10.0, ge=0)
    # Rooms created here that start end-to-end encrypted (m.room.encryption, Megolm) unless createRoom's
    # initial_state says otherwise: "all", "invite" (the private_chat and trusted_private_chat presets)
    # or "off". Synapse's key of the same name; clients that ask for encryption still get it when "off".
    encryption_enabled_by_default_for_room_type: Literal["all", "invite", "off"] = "off"


@dataclass(kw_only=True)
class RateLimit:
    per_second: float = setting(gt=0)
    burst: int = setting(ge=1)


@dataclass(kw_only=True)
class RateLimits:
    # Off only for benchmarks and load tests.
    enabled: bool = True
    # Per client IP address.
    login: RateLimit = field(default_factory=lambda: RateLimit(per_second=1.0, burst=20))
    registration: RateLimit = field(default_factory=lambda: RateLimit(per_second=1.0, burst=20))
    # Per user: sending events (messages, state, redactions).
    message: RateLimit = field(default_factory=lambda: RateLimit(per_second=20.0, burst=100))
    # Per remote server: /send transactions.
    federation: RateLimit = field(default_factory=lambda: RateLimit(per_second=100.0, burst=200))


@dataclass(kw_only=True)
class UrlPreview:
    """GET /_matrix/client/v1/media/preview_url (ranvier.media.preview): off unless enabled."""

    enabled: bool = False
    # Loopback, private, link-local and other non-global addresses are never fetched, nor these ranges,
    # unless a range is allowed back here.
    ip_range_blocklist: list[str] = field(default_factory=list)
    ip_range_allowlist: list[str] = field(default_factory=list)
    # Largest page and image read, in bytes, and seconds for one preview.
    max_bytes: int = setting(10 * 1024 * 1024, ge=1024)
    max_image_bytes: int = setting(10 * 1024 * 1024, ge=1024)
    timeout: float = setting(10.0, gt=0, le=120)


@dataclass(kw_only=True)
class Media:
    """The content repository (ranvier.media)."""

    # Where files are kept; default: <data_dir>/media.
    store_path: str | None = None
    # Largest upload, in bytes (413 M_TOO_LARGE beyond, refused before the body is read when declared).
    max_upload_size: int = setting(50 * 1024 * 1024, ge=1024)
    # Seconds an authenticated upload's body may take to arrive (request_limits.body_timeout applies until
    # the request is authenticated).
    upload_timeout: float = setting(600.0, gt=0, le=86400)
    # Images whose header declares more pixels than this are not decoded for thumbnails (413 M_TOO_LARGE).
    max_image_pixels: int = setting(32_000_000, ge=1024)
    # Per user: uploads and /create calls (token bucket), and created media ids waiting for their upload.
    upload_rate: RateLimit = field(default_factory=lambda: RateLimit(per_second=2.0, burst=20))
    max_pending_uploads: int = setting(10, ge=1)
    # Bytes each user may upload in all (403 M_FORBIDDEN beyond); null: no quota.
    max_user_storage_bytes: int | None = setting(None, ge=0)
    # Other servers' media: largest fetched, and seconds one fetch may take.
    max_remote_size: int = setting(50 * 1024 * 1024, ge=1024)
    remote_timeout: float = setting(30.0, gt=0, le=600)
    # Bytes of other servers' media kept; past it the earliest fetched are forgotten (null: no bound).
    max_remote_cache_bytes: int | None = setting(10 * 1024**3, ge=1024)
    # The deprecated unauthenticated /_matrix/media/*/download and /thumbnail serve only media stored
    # before this time (ms since the epoch), as Matrix 1.12 asks ("freeze"); 0 freezes all, null none.
    freeze_unauthenticated_after_ms: int | None = setting(0, ge=0)
    url_preview: UrlPreview = field(default_factory=UrlPreview)


@dataclass(kw_only=True)
class SupportContact:
    # /.well-known/matrix/support (CS "GET /.well-known/matrix/support"): at least one of the two.
    role: str
    matrix_id: str | None = None
    email_address: str | None = None


@dataclass(kw_only=True)
class Accounts:
    """Account lifecycle and what clients may change (issue 16; reported by GET /capabilities)."""

    # Seconds an access token lives when the client asked for a refresh token (CS "Refreshing access
    # tokens"). None (the default, as Synapse by default issues no expiring tokens): no refresh tokens,
    # tokens never expire.
    access_token_lifetime: float | None = setting(None, gt=0)
    # POST /account/password; m.change_password.
    password_change: bool = True
    # PUT /profile/{userId}/displayname and avatar_url (Synapse's enable_set_displayname/_avatar_url).
    set_displayname: bool = True
    set_avatar_url: bool = True
    # POST /_matrix/client/v1/login/get_token (MSC3882, Synapse's login_via_existing_session): off.
    login_get_token: bool = False
    login_token_lifetime: float = setting(120.0, gt=0, le=3600)
    # OpenID tokens for third parties (CS "OpenID"): seconds they stay valid.
    openid_token_lifetime: float = setting(3600.0, gt=0)
    # /.well-known/matrix/support: without contacts or page it answers 404, as the spec allows.
    support_contacts: list[SupportContact] = field(default_factory=list)
    support_page: str | None = None


@dataclass(kw_only=True)
class Voip:
    """GET /voip/turnServer, with Synapse's settings (turn_uris, turn_shared_secret or a fixed
    turn_username/turn_password, turn_user_lifetime). No turn_uris: an empty answer, as Synapse."""

    turn_uris: list[str] = field(default_factory=list)
    turn_shared_secret: str | None = None
    turn_username: str | None = None
    turn_password: str | None = None
    turn_user_lifetime: float = setting(86400.0, gt=0)


@dataclass(kw_only=True)
class Push:
    """Push notifications (ranvier.push)."""

    # Seconds a read notification is kept for GET /notifications (Synapse keeps highlights 30 days);
    # unread ones stay whatever their age, since the unread counts are read from them.
    notification_retention: float = setting(30 * 86400.0, gt=0)


@dataclass(kw_only=True)
class Presence:
    """Presence (ranvier.presence), Synapse's ``presence: enabled:``. Off: the endpoints still answer
    (GET says offline, PUT is accepted) but nothing is tracked, stored, sent or taken from other servers."""

    enabled: bool = True


@dataclass(kw_only=True)
class UserDirectory:
    """POST /user_directory/search, Synapse's ``user_directory: search_all_users:``: off, a user finds
    those sharing a room with them and those in public rooms; on, every local user as well."""

    search_all_users: bool = False


@dataclass(kw_only=True)
class Tracing:
    """OpenTelemetry (ranvier.logs.tracing): on when the OTEL_* environment asks for it."""

    # Servers (globs over server names) with which W3C trace context is exchanged: sent to them, honoured
    # from them. From any other server an incoming traceparent only becomes a span link.
    federation_peers: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class Caches:
    """The in-memory caches' bounds (each is an LRU: the least recently used entries go first)."""

    # Events kept decoded in memory, counted (about 2 KB of Python objects each).
    events: int = setting(10_000, ge=100)
    # State map entries kept for state groups and rooms' current state (a map of N keys counts N).
    state_entries: int = setting(1_000_000, ge=1000)
    # Rooms whose auth-chain index state resolution keeps between resolutions.
    state_res_rooms: int = setting(256, ge=1)
    # SQLite's page cache, KiB per connection (the writer and each of two readers); unused on PostgreSQL.
    sqlite_page_cache_kib: int = setting(8192, ge=128)


@dataclass(kw_only=True)
class AdminApi:
    """The Synapse-compatible admin API (ranvier.admin)."""

    # POST /_synapse/admin/v1/users/{userId}/login hands an admin a token of another user: off unless set.
    allow_login_as_user: bool = False


@dataclass(kw_only=True)
class ServerNotices:
    """Synapse's server_notices: the account that sends /_synapse/admin/v1/send_server_notice notices."""

    system_mxid_localpart: str
    system_mxid_display_name: str | None = None
    system_mxid_avatar_url: str | None = None
    room_name: str = "Server Notices"


def _server_name(v: str) -> str:
    if not is_valid_server_name(v):
        raise ValueError(f"{v!r} is not a valid server name (hostname, IP literal, optional :port)")
    return v


@dataclass(kw_only=True)
class HomeserverConfig:
    server_name: str = setting(check=_server_name)
    data_dir: str = "."
    signing_key_path: str
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Synapse's log_config: a Python logging dictConfig YAML (ranvier.logs.configure); when set, it replaces
    # log_level. Re-read on SIGHUP.
    log_config: str | None = None
    public_baseurl: str | None = None
    listeners: Listeners = field(default_factory=Listeners)
    database: Database
    registration: Registration = field(default_factory=Registration)
    federation: Federation = field(default_factory=Federation)
    rooms: Rooms = field(default_factory=Rooms)
    rate_limits: RateLimits = field(default_factory=RateLimits)
    request_limits: RequestLimits = field(default_factory=RequestLimits)
    key_fetch: KeyFetch = field(default_factory=KeyFetch)
    media: Media = field(default_factory=Media)
    tracing: Tracing = field(default_factory=Tracing)
    presence: Presence = field(default_factory=Presence)
    push: Push = field(default_factory=Push)
    accounts: Accounts = field(default_factory=Accounts)
    voip: Voip = field(default_factory=Voip)
    user_directory: UserDirectory = field(default_factory=UserDirectory)
    caches: Caches = field(default_factory=Caches)
    # Application services (bridges): Synapse-format registration files (ranvier.appservice).
    app_service_config_files: list[str] = field(default_factory=list)
    # Synapse's top-level names for the shared registration secret, read by its register_new_matrix_user
    # -c: accepted beside registration.shared_secret (which they fill in). The path's file is created with a
    # new random secret when missing, as Synapse does.
    registration_shared_secret: str | None = None
    registration_shared_secret_path: str | None = None
    admin_api: AdminApi = field(default_factory=AdminApi)
    # Off (no notices can be sent) unless configured, as in Synapse.
    server_notices: ServerNotices | None = None
    # Several processes on one PostgreSQL (ranvier.workers): the roles, and Redis for replication between
    # them. Absent: one process, as always.
    workers: Workers | None = None
    redis: Redis | None = None


def parse_config(data: Any) -> HomeserverConfig:
    if not isinstance(data, dict):
        raise ConfigError("configuration must be a YAML mapping")
    found: Problems = []
    config = read_section(HomeserverConfig, data, found)
    if isinstance(config, Invalid) or found:
        lines = [f"{key or '(top level)'}: {message}" for key, message in found]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    problems = check_workers(config.workers, config.redis, config.database.url)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    _apply_registration_secret(config)
    return config


def _apply_registration_secret(config: HomeserverConfig) -> None:
    """Fold Synapse's ``registration_shared_secret`` / ``registration_shared_secret_path`` into
    ``registration.shared_secret``; two different secrets are refused rather than one silently chosen."""
    found: dict[str, str] = {}
    if config.registration.shared_secret:
        found["registration.shared_secret"] = config.registration.shared_secret
    if config.registration_shared_secret:
        found["registration_shared_secret"] = config.registration_shared_secret
    if config.registration_shared_secret_path:
        path = Path(config.registration_shared_secret_path)
        try:
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(secrets.token_urlsafe(32) + "\n")
                path.chmod(0o600)
            secret = path.read_text().strip()
        except OSError as e:
            raise ConfigError(f"registration_shared_secret_path: cannot use {path}: {e.strerror}") from None
        if not secret:
            raise ConfigError(f"registration_shared_secret_path: {path} is empty")
        found["registration_shared_secret_path"] = secret
    if len(set(found.values())) > 1:
        raise ConfigError(f"{' and '.join(found)} give different shared secrets: set only one")
    if found:
        config.registration.shared_secret = next(iter(found.values()))


def load_config(path: str | Path) -> HomeserverConfig:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    base = Path(path).resolve().parent
    secret_path = data.get("registration_shared_secret_path") if isinstance(data, dict) else None
    if isinstance(secret_path, str) and not Path(secret_path).is_absolute():
        data["registration_shared_secret_path"] = str(base / secret_path)
    config = parse_config(data)
    # Relative paths in the file are relative to the file, so a data dir can be moved as a whole.
    for attr in ("data_dir", "signing_key_path", "log_config"):
        value = getattr(config, attr)
        if value and not Path(value).is_absolute():
            setattr(config, attr, str(base / value))
    config.app_service_config_files = [
        p if Path(p).is_absolute() else str(base / p) for p in config.app_service_config_files
    ]
    _check_app_services(config)
    if config.media.store_path and not Path(config.media.store_path).is_absolute():
        config.media.store_path = str(base / config.media.store_path)
    fed = config.listeners.federation
    for attr in ("tls_certificate_path", "tls_private_key_path"):
        value = getattr(fed, attr)
        if value and not Path(value).is_absolute():
            setattr(fed, attr, str(base / value))
    if config.database.url.startswith("sqlite:///") and not config.database.url.startswith("sqlite:////"):
        rel = config.database.url[len("sqlite:///") :]
        if rel != ":memory:":
            config.database.url = "sqlite:///" + str(base / rel)
    return config


def _check_app_services(config: HomeserverConfig) -> None:
    """Refuse bad appservice registration files before anything starts (the message names file and field)."""
    from .appservice.registration import RegistrationError, load_registrations

    try:
        load_registrations(config.app_service_config_files, config.server_name, warn=False)
    except RegistrationError as e:
        raise ConfigError(f"app_service_config_files: {e}") from None


TEMPLATE = """\
# Ranvier homeserver configuration. Relative paths are relative to this file.

# The name of this server: the part after ':' in user ids. Cannot be changed later.
server_name: "{server_name}"

# Where keys, certificates and the SQLite database live.
data_dir: "."

# This server's ed25519 signing key (created on first start if missing). Keep it; losing it makes other
# servers distrust events signed with a new key under the same id.
signing_key_path: "signing.key"

log_level: INFO
# A Python logging dictConfig YAML (console, a rotating file, the request lines of ranvier.access.*);
# replaces log_level when set. SIGHUP re-reads it.
{log_config_line}

listeners:
  # The client-server API, plain HTTP: put a TLS reverse proxy in front of it in production.
  client:
    bind: "127.0.0.1"
    port: {client_port}
    # Behind a reverse proxy: take the client's address from X-Forwarded-For (request log).
    x_forwarded: false
  # The federation API. With tls: true the certificate below is used (a self-signed one is created on
  # first start if the files are missing, good for tests and local federation only).
  federation:
    bind: "127.0.0.1"
    port: {federation_port}
    tls: true
    tls_certificate_path: "tls.crt"
    tls_private_key_path: "tls.key"
  # Prometheus metrics at /metrics, off unless enabled.
  metrics:
    enabled: false
    bind: "127.0.0.1"
    port: {metrics_port}

database:
  # sqlite:///file.db (embedded, the default) or postgresql://user@host:5432/dbname
  url: "sqlite:///homeserver.db"

registration:
  # Open registration with m.login.dummy. Leave off on a public server.
  enabled: {registration_enabled}
  # Registration needs a token made with the admin API (/_synapse/admin/v1/registration_tokens).
  requires_token: false

# Secret for shared-secret admin registration (/_synapse/admin/v1/register), under Synapse's name so that
# both `ranvier register-user` and Synapse's `register_new_matrix_user -c homeserver.yaml` find it
# (registration.shared_secret, or registration_shared_secret_path naming a file, work as well).
registration_shared_secret: "{shared_secret}"

federation:
  enabled: true
  # Check the TLS certificates of other servers. Turn off only for local test federations.
  verify_tls: {verify_tls}
  # Outbound federation to private, loopback and link-local addresses is refused unless allowed.
  allow_loopback: {allow_loopback}
  # Extra CIDR ranges to refuse (on top of the built-in private ranges); null keeps the defaults.
  ip_range_blocklist: null
  # Notary servers to ask for keys when a server cannot be reached directly.
  trusted_key_servers: []
  # Back-off towards a failing server, in seconds (doubling, bounded); its next request resets it.
  retry_initial_backoff: 5
  retry_max_backoff: 120
  # Seconds one outbound transaction may take before it is retried.
  transaction_timeout: 30
  # After an outage, queued events beyond this many per room are left for the other server to fetch.
  catchup_max_per_room: 2000
  # Events fetched in the background to close a gap in a room's timeline (0: only when a client pages).
  gap_fill_max_events: 10000
  # Show our users' device display names to other servers (off: they see device ids only).
  allow_device_name_lookup_over_federation: false

# Token buckets: requests per second and the burst allowed above that. Limited requests get
# 429 M_LIMIT_EXCEEDED with retry_after_ms.
rate_limits:
  enabled: true
  login: {{per_second: 1, burst: 20}}          # per client IP
  registration: {{per_second: 1, burst: 20}}   # per client IP
  message: {{per_second: 20, burst: 100}}      # per user: messages, state events, redactions
  federation: {{per_second: 100, burst: 200}}  # /send transactions per remote server

# Limits on each listener (client and federation), against slow, unfinished and oversized requests.
request_limits:
  # Seconds to send a request line and headers (and the TLS handshake); then the connection is closed.
  header_timeout: 20
  # Seconds to send a request body once its headers are in (408 M_UNKNOWN, then closed).
  body_timeout: 60
  # Seconds an idle keep-alive connection is kept open.
  idle_timeout: 60
  # Open connections per listener; beyond it the least recently active idle connection is closed.
  # Lowered at start if the file descriptor limit (ulimit -n) cannot hold it.
  max_connections: 4096
  # Largest request bodies, in bytes; a larger declared Content-Length is refused (413 M_TOO_LARGE)
  # before it is read.
  max_client_body_bytes: 1048576            # client-server API
  max_federation_send_body_bytes: 8388608   # federation /send transactions
  max_federation_body_bytes: 1048576        # every other federation endpoint
  # Request bodies being received before their request is authenticated, per listener, and their bytes
  # in total. Beyond either, requests are answered 429 M_LIMIT_EXCEEDED at once (memory stays bounded).
  max_unauthenticated_bodies: 256
  max_unauthenticated_body_bytes: 67108864

# Fetching other servers' signing keys.
key_fetch:
  # Seconds one key request (to the server, or to a notary) may take.
  timeout: 5
  # After a failed fetch the keys are fetched again on demand after a back-off doubling from 1 s up to
  # this (with jitter); a request signed by that server fetches them again at once.
  retry_max: 30

# The content repository (uploads, downloads, thumbnails, other servers' media).
media:
  # Where files are kept (content-addressed); null: "media" under data_dir.
  store_path: null
  # Largest upload in bytes; a larger one is refused with 413 M_TOO_LARGE.
  max_upload_size: 52428800
  # Seconds an upload's body may take once its request is authenticated (slow links, big files).
  upload_timeout: 600
  # Images declaring more pixels than this are never decoded for thumbnails (decompression bombs).
  max_image_pixels: 32000000
  # Per user: uploads and /create calls, and created media ids waiting for their upload.
  upload_rate: {{per_second: 2, burst: 20}}
  max_pending_uploads: 10
  # Bytes each user may upload in all (403 M_FORBIDDEN beyond); null: no quota.
  max_user_storage_bytes: null
  # Other servers' media: largest fetched (bytes) and seconds per fetch.
  max_remote_size: 52428800
  remote_timeout: 30
  # Bytes of other servers' media kept here; past it the earliest fetched are forgotten (null: no bound).
  max_remote_cache_bytes: 10737418240
  # Matrix 1.12 "freeze": the deprecated unauthenticated download/thumbnail endpoints serve only media
  # stored before this time (ms since the epoch); 0 freezes all, null never.
  freeze_unauthenticated_after_ms: 0
  # URL previews for clients: off by default. When on, loopback, private and link-local addresses are
  # never fetched unless a range is allowed back in ip_range_allowlist.
  url_preview:
    enabled: false
    ip_range_blocklist: []
    ip_range_allowlist: []
    max_bytes: 10485760
    max_image_bytes: 10485760
    timeout: 10

# Application services (bridges): their registration files, in Synapse's format (id, url, as_token,
# hs_token, sender_localpart, namespaces, rate_limited, protocols, receive_ephemeral). Checked at start:
# an invalid file, a bad regex, a missing or repeated token or id stops the server with a message naming
# the file and field. Relative paths are relative to this file.
app_service_config_files: []

# OpenTelemetry traces: on when the standard OTEL_* environment variables ask for them (OTEL_TRACES_EXPORTER,
# OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, ...).
tracing:
  # Servers (globs, e.g. "*.example.org") trace context is exchanged with; none by default.
  federation_peers: []

# Presence (online, unavailable, offline and a status message), Synapse's "presence: enabled:". Off:
# nothing is tracked or shared with other servers; GET /presence answers "offline", PUT is ignored.
presence:
  enabled: true

# Push notifications: read notifications older than this many seconds are pruned (unread ones stay).
push:
  notification_retention: 2592000

# Accounts (CS "Account registration and management"): access_token_lifetime (seconds) lets access
# tokens expire and clients use refresh tokens (unset: tokens never expire, as Synapse by default); what
# users may change (GET /capabilities follows these); login tokens to sign in another device (MSC3882);
# how long OpenID tokens for integrations live; /.well-known/matrix/support contacts, e.g.
#   support_contacts: [{{role: m.role.admin, matrix_id: "@admin:example.org"}}]
accounts:
  access_token_lifetime: null
  password_change: true
  set_displayname: true
  set_avatar_url: true
  login_get_token: false
  login_token_lifetime: 120
  openid_token_lifetime: 3600
  support_contacts: []
  support_page: null

# TURN for VoIP calls, coturn's use-auth-secret scheme (or a fixed turn_username/turn_password); with no
# turn_uris /voip/turnServer answers {{}} and clients call without TURN.
voip:
  turn_uris: []
  turn_shared_secret: null
  turn_user_lifetime: 86400

# Bounds of the in-memory caches: memory levels off once they are full (LRU, least recently used first).
caches:
  # Events kept decoded in memory (about 2 KB each).
  events: 10000
  # State map entries of state groups and rooms' current state (a room with N state events counts N).
  state_entries: 1000000
  # Rooms whose auth-chain index state resolution keeps.
  state_res_rooms: 256
  # SQLite page cache in KiB per connection (writer and two readers); not used on PostgreSQL.
  sqlite_page_cache_kib: 8192

rooms:
  default_room_version: "{default_room_version}"
  # Tie forward extremities together with a dummy event beyond this many.
  max_forward_extremities: 10
  # After a remote join, heal the make_join/send_join gap with a dummy event (keep this on).
  join_gap_dummy_event: true
  # Join remote rooms with partial state (members fetched in the background; MSC3706 faster joins).
  partial_state_joins: true
  # Rooms that start end-to-end encrypted: all, invite (private presets) or off (clients choose).
  encryption_enabled_by_default_for_room_type: "off"
"""


def render_config(
    server_name: str,
    *,
    client_port: int = 8008,
    federation_port: int = 8448,
    metrics_port: int = 9090,
    registration_enabled: bool = False,
    verify_tls: bool = True,
    allow_loopback: bool = False,
    log_config: str | None = None,
) -> str:
    log_config_line = f'log_config: "{log_config}"' if log_config else "# log_config: homeserver.log.config"
    text = TEMPLATE.format(
        log_config_line=log_config_line,
        server_name=server_name,
        client_port=client_port,
        federation_port=federation_port,
        metrics_port=metrics_port,
        registration_enabled=str(registration_enabled).lower(),
        shared_secret=secrets.token_urlsafe(32),
        verify_tls=str(verify_tls).lower(),
        allow_loopback=str(allow_loopback).lower(),
        default_room_version=DEFAULT_ROOM_VERSION,
    )
    parse_config(yaml.safe_load(text))  # the template must always be valid
    return text
