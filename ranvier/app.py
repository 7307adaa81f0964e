"""The one place where Ranvier is constructed and wired, and the process lifecycle.

Everything is built here from the config and passed down as constructor arguments: no globals, no
service locator. ``Homeserver.start()`` opens storage and listeners; ``stop()`` stops accepting, lets
in-flight requests finish, and closes storage (all accepted writes are already committed by then).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import ssl
from pathlib import Path
from typing import Any

from aiohttp import web

from .accounts.deactivation import AccountDeactivator
from .accounts.moderation import SuspensionPolicy
from .accounts.remote_profile import RemoteProfiles
from .admin.api import AdminApi
from .admin.dag import RoomDagHandlers
from .admin.federation import FederationAdminHandlers
from .admin.media import MediaAdminHandlers
from .admin.partial_state import PartialStateAdminHandlers
from .admin.room_check import RoomCheckHandlers
from .appservice.client import AppServiceClient
from .appservice.ephemeral import EphemeralFeed
from .appservice.metrics import AppServiceCollector
from .appservice.pusher import AppServicePusher
from .appservice.queries import AppServiceQueries
from .appservice.registration import load_registrations
from .client_api.account import AccountHandlers
from .client_api.account_data import AccountDataHandlers
from .client_api.account_manage import AccountManagementHandlers
from .client_api.account_moderation import AccountModerationHandlers
from .client_api.appservice import AppServiceHandlers
from .client_api.auth import Authenticator
from .client_api.bundled import BundledAggregations
from .client_api.capabilities import CapabilitiesHandlers
from .client_api.cors import cors_middleware
from .client_api.directory import DirectoryHandlers
from .client_api.ephemeral import EphemeralHandlers, SyncNotifier, TypingStream
from .client_api.errors import matrix_error_middleware
from .client_api.keys import KeyHandlers
from .client_api.knock import KnockHandlers
from .client_api.legacy import LegacyHandlers, presence_events_of
from .client_api.media import MediaHandlers, is_upload
from .client_api.messages import MessageHandlers
from .client_api.notifications import NotificationHandlers
from .client_api.presence import PresenceHandlers
from .client_api.profile_sync import ProfilePropagator
from .client_api.push_rules import PushRuleHandlers
from .client_api.pushers import PusherHandlers
from .client_api.ratelimits import rate_limit_middleware
from .client_api.registration_tokens import RegistrationTokenValidity
from .client_api.room_keys import RoomKeyHandlers
from .client_api.room_upgrades import RoomUpgradeHandlers
from .client_api.rooms import RoomHandlers
from .client_api.search import SearchHandlers
from .client_api.sliding_sync import SlidingSyncHandlers
from .client_api.spaces import SpaceHandlers
from .client_api.sync import SyncHandlers
from .client_api.tags import TagHandlers
from .client_api.timestamps import TimestampHandlers
from .client_api.to_device import ToDeviceHandlers
from .client_api.token_issuer import TokenIssuer
from .client_api.user_directory import UserDirectoryHandlers
from .client_api.versions import VersionsHandlers
from .client_api.voip import VoipHandlers
from .config import HomeserverConfig
from .devices.device_lists import DeviceLists
from .devices.federation import E2eeFederation
from .devices.key_backup import KeyBackups
from .devices.keys import KeyService
from .devices.sync_section import E2eeSync
from .devices.to_device import ToDeviceService
from .federation.client import FederationClient
from .federation.discovery import ServerDiscovery
from .federation.e2ee_routes import add_e2ee_routes
from .federation.ip_blocklist import IpBlocklist
from .federation.key_routes import add_key_routes
from .federation.keys import Keyring, Notary
from .federation.media_routes import add_media_routes
from .federation.membership_routes import MembershipHandler, add_membership_routes
from .federation.request_auth import origin_seen_middleware
from .federation.routes import FederationRoutes
from .federation.sender import FederationSender
from .federation.space_routes import add_space_routes
from .federation.tls import generate_self_signed_cert, generate_self_signed_cert_in_child, server_ssl_context
from .http_limits import (
    BodyLimit,
    ConnectionGuard,
    GuardCollector,
    GuardedSite,
    ListenerLimits,
    body_limits_middleware,
    connection_cap,
)
from .logs import configure as log_configure
from .logs.access import access_log_middleware
from .logs.context import install_record_factory
from .logs.tracing import Tracing
from .logs.wiring import wire_tracing
from .media.federation import FederationMedia
from .media.files import FileStore
from .media.preview import UrlPreviewer
from .media.remote import RemoteMediaFetcher
from .media.repository import MediaLimits, MediaRepository
from .media.thumbnailer import Thumbnailer
from .memory_release import settle_after_start
from .metrics import Metrics, metrics_middleware
from .metrics_collectors import LoopLagMonitor
from .metrics_wiring import health_handler, wire_metrics
from .presence.service import PresenceService
from .presence.sync_section import PresenceSync
from .protocol.signing import SigningKey
from .push.actions import PushActionsHook
from .push.delivery import PushDelivery
from .push.housekeeping import PushHousekeeping
from .ratelimit import RateLimiter, RateSpec
from .rooms.backfill import Backfiller
from .rooms.gap_filler import GapFiller
from .rooms.incoming import IncomingPdus
from .rooms.incoming_edus import IncomingEdus
from .rooms.incoming_reads import FederationReads
from .rooms.incoming_txn import InboundTransactions
from .rooms.knock import KnockService
from .rooms.local_events import LocalEventCreator
from .rooms.membership import MembershipService
from .rooms.partial_resync import PartialStateResync
from .rooms.persister import EventPersister
from .rooms.remote_join import RemoteMembershipService
from .rooms.resident import ResidentMembership
from .rooms.room_check import RoomChecker
from .rooms.spaces import SpaceHierarchy
from .rooms.state import StateService
from .rooms.timestamps import TimestampLookup
from .rooms.upgrade import RoomUpgrader
from .rooms.visibility import HistoryVisibilityFilter
from .search.room_events import RoomEventSearch
from .storage import open_storage
from .storage.protocols.accounts import UserExists
from .storage.protocols.composite import Storage
from .storage.sql.appservice import AppServiceStore
from .storage.sql.media import MediaStore
from .storage.sql.presence import PresenceStore
from .workers.config import MAIN
from .workers.event_forwarding import (
    ForwardingCreator,
    ForwardingMembership,
    add_membership_route,
    add_persist_built_route,
    add_send_event_route,
)
from .workers.federation_forwarding import (
    ForwardingBackfiller,
    ForwardingKnockService,
    ForwardingRemoteMembership,
    add_backfill_route,
    add_remote_membership_route,
)
from .workers.presence import RelayedPresence, add_presence_route
from .workers.purge_forwarding import add_purge_route, forwarding_purge, owner_purge
from .workers.replication_http import PduRouter, ReplicationClient, add_internal_routes, forwarding_middleware
from .workers.roles import config_for_instance, plan_for
from .workers.runtime import ReplicatedNotifier, ReplicatedTyping, WorkerRuntime

logger = logging.getLogger(__name__)

FEDERATION_SEND_PREFIX = "/_matrix/federation/v1/send/"


def load_or_create_signing_key(path: Path) -> SigningKey:
    """Our ed25519 key: read from ``path``, or generated and written there on first start."""
    if path.exists():
        line = path.read_text().strip().splitlines()[0]
        return SigningKey.from_file_line(line)
    # A random version: a server re-created under the same name must not reuse an old key id, since peers
    # cache keys by id (see shared/interop/SYNAPSE.md).
    key = SigningKey.generate("a_" + secrets.token_hex(3))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(key.to_file_line() + "\n")
    path.chmod(0o600)
    logger.info("generated a new signing key %s in %s", key.key_id, path)
    return key


class Homeserver:
    def __init__(
        self, config: HomeserverConfig, worker: str = MAIN, *, certificate_in_child: bool = False
    ) -> None:
        # A missing federation certificate is made in a child process by the server process (run_homeserver):
        # cryptography would stay in its memory for good. Tests start many servers in one process, where it
        # is imported once for all and a child per server would cost each start a second.
        self._certificate_in_child = certificate_in_child
        # Every log record carries the request id (``%(request)s``); statement traces are kept out.
        install_record_factory()
        # The role of this process (ranvier.workers): what it listens on and which subsystems it runs.
        self.plan = plan_for(config.workers, worker)
        config = config_for_instance(config, self.plan)
        self.worker_runtime: WorkerRuntime | None = None
        self.replication_client: ReplicationClient | None = None
        # With workers: hands each room's PDUs to the process that persists the room (_wire_workers).
        self.pdu_router: PduRouter | None = None
        if self.plan.multi_process and config.workers is not None and config.redis is not None:
            self.worker_runtime = WorkerRuntime(
                self.plan, config.redis.url, config.redis.channel_prefix, database_url=config.database.url
            )
            self.replication_client = ReplicationClient(config.workers)
        self.config = config
        self.server_name = config.server_name
        self._runners: list[web.AppRunner] = []
        self._storage: Storage | None = None
        self.ports: dict[str, int] = {}
        # Per listener: connection and body limits, and what they did (ranvier.http_limits).
        self.guards: dict[str, ConnectionGuard] = {}

    @property
    def storage(self) -> Storage:
        """The storage of a started server (RuntimeError before ``start()`` and after ``stop()``)."""
        if self._storage is None:
            raise RuntimeError("the homeserver is not started")
        return self._storage

    @property
    def running(self) -> bool:
        """Between ``start()`` opening the storage and ``stop()`` closing it."""
        return self._storage is not None

    async def start(self) -> None:
        config = self.config
        data_dir = Path(config.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.signing_key = load_or_create_signing_key(Path(config.signing_key_path))
        caches = config.caches
        self._storage = storage = await open_storage(
            config.database.url,
            sqlite_page_cache_kib=caches.sqlite_page_cache_kib,
            cached_events=caches.events,
            cached_state_entries=caches.state_entries,
        )
        if self.worker_runtime is not None:
            # Before anything reads positions: the event stream is shared with the other writers.
            await self.worker_runtime.attach_storage(storage)
        self.metrics = Metrics()
        self.metrics.registry.register(GuardCollector(self.guards))

        # OpenTelemetry, when the OTEL_* environment asks for it (else the SDK is not imported).
        self.tracing = Tracing(self.server_name, config.tracing.federation_peers)
        fed = config.federation
        blocklist = IpBlocklist(extra_blocked=fed.ip_range_blocklist or (), allow_loopback=fed.allow_loopback)
        self.federation_client = FederationClient(
            self.server_name,
            self.signing_key,
            discovery=ServerDiscovery(host_overrides=fed.host_overrides),
            verify_tls=fed.verify_tls,
            blocklist=blocklist,
            tracing=self.tracing,
        )
        self.keyring = Keyring(
            self.server_name,
            [self.signing_key],
            client=self.federation_client,
            store=storage.keys,
            notaries=[
                Notary(t) if isinstance(t, str) else Notary(t.server_name, t.verify_keys)
                for t in fed.trusted_key_servers
            ],
            fetch_timeout=config.key_fetch.timeout,
            retry_max=config.key_fetch.retry_max,
        )

        self.state = StateService(storage, max_room_indexes=caches.state_res_rooms)
        # History visibility, applied to what our users read and what other servers fetch.
        self.history_visibility = HistoryVisibilityFilter(storage)
        self.persister = EventPersister(storage, self.state)
        # Push rules evaluated for every local member on every live event, in the persist transaction.
        self.push_actions = PushActionsHook(self.server_name, storage.push_actions)
        self.persister.add_txn_hook(self.push_actions.in_txn)
        self.persister.add_out_of_band_hook(self.push_actions.out_of_band_in_txn)
        # Deliveries to push gateways, woken after each commit and by /pushers/set.
        self.push_delivery = PushDelivery(storage, blocklist, self.push_actions.take_notified)
        self.persister.add_listener(self.push_delivery.on_persisted)
        # Redacted events stop notifying, deleted devices' pushers go, old read notifications are pruned.
        self.push_housekeeping = PushHousekeeping(
            storage.db,
            int(config.push.notification_retention * 1000),
            on_pushers_deleted=self.push_delivery.wake,
        )
        self.persister.add_txn_hook(self.push_housekeeping.in_txn)  # after the push actions' hook
        storage.devices.deleted_listeners.append(self.push_housekeeping.devices_deleted)
        # With workers, events of rooms another process persists are created there (ranvier.workers).
        creator = LocalEventCreator if self.worker_runtime is None else ForwardingCreator
        self.creator = creator(storage, self.state, self.persister, self.server_name, self.signing_key)
        if isinstance(self.creator, ForwardingCreator):
            self.creator.plan, self.creator.replication = self.plan, self.replication_client
        self.membership = MembershipService(storage, self.creator, self.server_name)
        # Deactivation (client /account/deactivate and the admin API): leaves rooms through membership.
        self.deactivator = AccountDeactivator(storage, self.membership)
        self._wire_appservices()
        self.authenticator = Authenticator(storage, appservices=self.appservices)
        # CS "Account suspension": what a suspended account may not do (locking needs no policy).
        self.authenticator.suspension = SuspensionPolicy(storage)
        # Wakes long-polling /sync on account data, receipts and typing (events have their own wake-up).
        self.sync_notifier = SyncNotifier() if self.worker_runtime is None else ReplicatedNotifier()
        self._wire_federation()
        self._wire_presence()
        # Typing, receipts and presence for appservices with receive_ephemeral, on the same wake-up as /sync.
        self.appservice_ephemeral = EphemeralFeed(
            self.appservice_pusher,
            self.appservice_pusher.store,
            self.typing,
            self.sync_notifier,
            presence=self.presence_store if self.presence.enabled else None,
            events_position=storage.stream.current_position,
        )
        self.persister.add_listener(self.appservice_ephemeral.on_persisted)
        self._wire_e2ee()
        self._wire_media()
        # The Synapse-compatible admin API (ranvier.admin): users, rooms, reports, notices, tokens.
        self.admin_api = AdminApi(
            config=config,
            storage=storage,
            authenticator=self.authenticator,
            persister=self.persister,
            creator=self.creator,
            membership=self.membership,
            deactivator=self.deactivator,
            on_profile_changed=ProfilePropagator(storage, self.creator).on_profile_changed,
            gap_filler=self.gap_filler,
        )
        if self.worker_runtime is not None and self.replication_client is not None:
            # A room's purge runs in its persister, under the room's lock, and the others forget the room.
            self._purge_here = owner_purge(storage.db, storage, self.persister, self.worker_runtime.bus)
            self.admin_api.room_deleter.purge = forwarding_purge(
                self.plan, self.replication_client, self._purge_here
            )
        await self.admin_api.start()

        await self._register_appservice_senders()
        # Metrics: the hooks that count as things happen, the scrape-time collector, event-loop lag.
        self.loop_lag = wire_metrics(self)
        # Request ids and traces followed into the sender and /sync; spans for persist, PDUs, state res.
        self.event_origins = wire_tracing(self)
        plan = self.plan
        if self.worker_runtime is not None:
            self._wire_workers()
        if plan.client_listener:
            await self._start_client_listener()
        elif plan.federation_listener and config.federation.enabled:
            # Some client handlers also serve federation routes (OpenID userinfo): built, not served.
            self._client_app()
        if plan.replication_listener:
            await self._start_replication_listener()
        if plan.background:
            await self.appservice_pusher.start()
            await self.push_delivery.start()
            await self.push_housekeeping.start()
            await self.appservice_ephemeral.start()
            await self.presence.start()
        if config.federation.enabled:
            if plan.federation_listener:
                await self._start_federation_listener()
            if plan.federation_sender:
                await self.federation_sender.start()
            if plan.background:
                await self.device_lists.resend_unsent()
                self.incoming_pdus.deferred.start()  # PDUs that could not be judged before a restart
                await self.remote_membership.process_all_queued()
            if plan.persists_events:
                # Each room's holes are filled, and its partial-state resync runs, in the process that
                # persists the room (its intake notices the holes; its backfill persists the events).
                if self.gap_filler is not None:
                    await self.gap_filler.start(owned=plan.owns_room)
                await self.partial_resync.resume_all(owned=plan.owns_room)
        if config.listeners.metrics.enabled:
            await self._start_metrics_listener()
        logger.info("Ranvier %s started: %s", self.server_name, self.ports)

    def _wire_federation(self) -> None:
        """Federation routes, the outbound sender and remote membership: added as those modules land."""
        self.federation_app_setup: list[Any] = []
        # Older history of rooms joined over federation, fetched when /messages pages past our oldest event.
        self.backfiller: Backfiller | None = None
        if self.config.federation.enabled:
            client, keyring = self.federation_client, self.keyring
            # With workers, a room's backfill runs in the process that persists it (ranvier.workers).
            backfiller = Backfiller if self.replication_client is None else ForwardingBackfiller
            self.backfiller = backfiller(
                self.storage, self.state, self.persister, client, keyring, self.server_name
            )
            if isinstance(self.backfiller, ForwardingBackfiller):
                self.backfiller.plan, self.backfiller.replication = self.plan, self.replication_client
        # Inbound federation: /send (PDU intake pipeline, EDUs) and the reads other servers make.
        self.incoming_pdus = IncomingPdus(
            self.storage, self.state, self.persister, self.keyring, self.federation_client, self.server_name
        )
        typing_stream = TypingStream if self.worker_runtime is None else ReplicatedTyping
        self.typing = typing_stream(on_change=self.sync_notifier.notify)
        incoming_edus = IncomingEdus(
            self.storage,
            self.typing,
            self.incoming_pdus.server_allowed,
            on_receipt=self.sync_notifier.notify,
        )
        self.inbound_transactions = InboundTransactions(self.storage, self.incoming_pdus, incoming_edus)
        self.federation_reads = FederationReads(self.storage, self.server_name, self.history_visibility)
        limits = self.config.rate_limits
        routes = FederationRoutes(
            self.keyring,
            self.server_name,
            self.inbound_transactions,
            self.federation_reads,
            RateLimiter(RateSpec(limits.federation.per_second, limits.federation.burst))
            if limits.enabled
            else None,
        )
        self.federation_app_setup.append(routes.setup)

        # Outbound: the durable per-destination sender, fed by every committed batch.
        self.federation_sender = FederationSender(
            self.storage,
            self.federation_client,
            self.server_name,
            metrics=self.metrics,
            initial_backoff=self.config.federation.retry_initial_backoff,
            max_backoff=self.config.federation.retry_max_backoff,
            catchup_keep_per_room=self.config.federation.catchup_max_per_room,
            announce_on_start=True,
            transaction_timeout=self.config.federation.transaction_timeout,
        )
        self.persister.add_txn_hook(self.federation_sender.enqueue_in_txn)
        self.inbound_transactions.origin_seen = self.federation_sender.mark_reachable
        # Holes in room timelines (prev events the intake could not fetch at once), filled in the background.
        self.gap_filler: GapFiller | None = None
        if self.backfiller is not None:
            self.gap_filler = GapFiller(
                self.storage,
                self.backfiller,
                max_events=self.config.federation.gap_fill_max_events,
                metrics=self.metrics,
            )
            self.incoming_pdus.on_gap = self.gap_filler.notice
        self.persister.add_listener(self.federation_sender.on_persisted)

        # Membership over federation: the resident side (with the join-gap healing) and the joining side.
        rooms_config = self.config.rooms
        self.resident = ResidentMembership(
            self.storage,
            self.state,
            self.persister,
            self.creator,
            self.server_name,
            self.signing_key,
            self.keyring,
            self.federation_sender,
            join_gap_dummy_event=rooms_config.join_gap_dummy_event,
            max_forward_extremities=rooms_config.max_forward_extremities,
        )
        self.remote_membership = RemoteMembershipService(
            self.storage,
            self.state,
            self.persister,
            self.creator,
            self.resident,
            self.federation_client,
            self.keyring,
            self.server_name,
            self.signing_key,
            partial_state_joins=rooms_config.partial_state_joins,
        )
        self.remote_membership.process_pdus = self.incoming_pdus.receive_pdus
        # Rooms joined with partial state (MSC3706): members fetched in the background, resumed at start.
        self.partial_resync = PartialStateResync(
            self.storage,
            self.state,
            self.persister,
            self.federation_client,
            self.keyring,
            self.server_name,
            retry_initial=rooms_config.partial_state_retry_initial,
            retry_max=rooms_config.partial_state_retry_max,
        )
        self.remote_membership.on_partial_join = self.partial_resync.start
        self.persister.set_placement(self.remote_membership.place)
        self.incoming_pdus.joins = self.remote_membership
        self.incoming_pdus.out_of_room = self.resident.accept_out_of_room_membership
        self.membership.remote = self.remote_membership
        # Other servers' users' profiles: for GET /profile and for the invites of them.
        self.remote_profiles = RemoteProfiles(self.federation_client)
        if self.config.federation.enabled:
            self.membership.remote_profile = self.remote_profiles.lookup
        self.federation_app_setup.append(
            lambda app: add_membership_routes(app, self.keyring, self.server_name, self._membership_handler())
        )
        # Spaces: the hierarchy served to other servers and asked of them for rooms we are not in.
        self.spaces = SpaceHierarchy(
            self.storage, self.server_name, self.federation_client if self.config.federation.enabled else None
        )
        self.federation_app_setup.append(
            lambda app: add_space_routes(app, self.keyring, self.server_name, self.spaces)
        )

    def _wire_appservices(self) -> None:
        """Application services (ranvier.appservice): registrations, the durable pusher (queued in the
        persist transaction, woken after the commit), queries and metrics."""
        self.appservices = load_registrations(self.config.app_service_config_files, self.server_name)
        self.appservice_client = AppServiceClient()
        self.appservice_pusher = AppServicePusher(
            self.appservices,
            AppServiceStore(self.storage.db),
            self.storage.events,
            self.appservice_client,
            keys=self.storage.e2e_keys,
        )
        self.appservice_queries = AppServiceQueries(self.appservices, self.appservice_client)
        if self.appservices:
            self.persister.add_txn_hook(self.appservice_pusher.enqueue_in_txn)
            self.persister.add_listener(self.appservice_pusher.on_persisted)
            self.persister.add_out_of_band_hook(
                self.appservice_pusher.enqueue_in_txn, self.appservice_pusher.on_persisted
            )
            self.metrics.registry.register(AppServiceCollector(self.appservice_pusher))

    async def _register_appservice_senders(self) -> None:
        """Each appservice's sender_localpart user exists from the start (as in Synapse)."""
        for service in self.appservices.all:
            if not await self.storage.users.user_exists(service.sender):
                with contextlib.suppress(UserExists):
                    await self.storage.users.create_user(service.sender, None)
                    logger.info("registered %s for appservice %s", service.sender, service.id)

    def _wire_media(self) -> None:
        """The content repository (ranvier.media): files under the data directory, metadata in storage."""
        media = self.config.media
        files = FileStore(Path(media.store_path or Path(self.config.data_dir) / "media"))
        files.prepare()
        store = MediaStore(self.storage.db)
        # Other servers' media, fetched through the federation client (and ours served to them).
        self.remote_media: RemoteMediaFetcher | None = None
        if self.config.federation.enabled:
            self.remote_media = RemoteMediaFetcher(
                self.federation_client,
                store,
                files,
                max_size=media.max_remote_size,
                timeout=media.remote_timeout,
            )
        self.media = MediaRepository(
            store,
            files,
            Thumbnailer(media.max_image_pixels),
            self.server_name,
            MediaLimits(
                max_upload_size=media.max_upload_size,
                max_pending_uploads=media.max_pending_uploads,
                max_remote_cache_bytes=media.max_remote_cache_bytes,
                max_user_storage_bytes=media.max_user_storage_bytes,
            ),
            remote=self.remote_media,
        )
        self.url_previewer: UrlPreviewer | None = None
        if media.url_preview.enabled:
            preview = media.url_preview
            self.url_previewer = UrlPreviewer(
                files,
                self.media.record_file,
                blocklist=IpBlocklist(
                    extra_blocked=preview.ip_range_blocklist, allowed=preview.ip_range_allowlist
                ),
                max_bytes=preview.max_bytes,
                timeout=preview.timeout,
                max_image_bytes=preview.max_image_bytes,
            )
        federation_media = FederationMedia(self.media)
        self.federation_app_setup.append(
            lambda app: add_media_routes(app, self.keyring, self.server_name, federation_media)
        )

    def _guard(
        self, name: str, max_body_bytes: int, body_limit: BodyLimit | None = None, streamed: Any = None
    ) -> ConnectionGuard:
        limits = self.config.request_limits
        listeners = 2 + int(self.config.listeners.metrics.enabled)
        guard = ConnectionGuard(
            name,
            ListenerLimits(
                header_timeout=limits.header_timeout,
                body_timeout=limits.body_timeout,
                idle_timeout=limits.idle_timeout,
                max_connections=connection_cap(limits.max_connections, listeners),
                max_body_bytes=max_body_bytes,
                max_unauthenticated_bodies=limits.max_unauthenticated_bodies,
                max_unauthenticated_body_bytes=limits.max_unauthenticated_body_bytes,
                body_limit=body_limit,
                streamed=streamed,
            ),
        )
        self.guards[name] = guard
        return guard

    def _wire_presence(self) -> None:
        """Presence (ranvier.presence): the service and its timeouts, m.presence EDUs both ways (the
        presence of local users sent when a server joins their rooms), /sync's section."""
        self.presence_store = PresenceStore(self.storage.db)
        # With workers, presence is owned by the background process; the others relay to it.
        relayed = self.worker_runtime is not None and not self.plan.background
        self.presence = (RelayedPresence if relayed else PresenceService)(
            self.presence_store,
            self.server_name,
            enabled=self.config.presence.enabled,
            sender=self.federation_sender if self.config.federation.enabled else None,
            state_store=self.storage.state,
            notify=self.sync_notifier.notify,
        )
        self.inbound_transactions.edus.handlers["m.presence"] = self.presence.on_edu
        self.persister.add_listener(self.presence.on_persisted)

    def _wire_e2ee(self) -> None:
        """End-to-end encryption (ranvier.devices): keys, device lists and to-device messages, with their
        EDUs and federation routes."""
        federating = self.config.federation.enabled
        client = self.federation_client if federating else None
        sender = self.federation_sender if federating else None
        notify = self.sync_notifier.notify
        self.device_lists = DeviceLists(
            self.storage,
            self.server_name,
            federation_client=client,
            sender=sender,
            notify=notify,
            share_device_names=self.config.federation.allow_device_name_lookup_over_federation,
        )
        self.to_device = ToDeviceService(self.storage, self.server_name, sender=sender, notify=notify)
        self.key_service = KeyService(self.storage, self.device_lists, client)
        self.e2ee_sync = E2eeSync(self.storage, self.device_lists, self.to_device)
        e2ee_federation = E2eeFederation(self.key_service, self.device_lists, self.to_device)
        self.inbound_transactions.edus.handlers.update(e2ee_federation.edu_handlers())
        self.federation_app_setup.append(
            lambda app: add_e2ee_routes(app, self.keyring, self.server_name, e2ee_federation)
        )

        async def devices_deleted(user_id: str, device_ids: list[str]) -> None:
            await self.device_lists.on_local_change(user_id, device_ids, deleted=True)

        self.storage.devices.deleted_listeners.append(devices_deleted)
        self.storage.devices.renamed_listeners.append(self.device_lists.on_local_change)
        self.persister.add_listener(self.device_lists.on_persisted)

    def _wire_workers(self) -> None:
        """Several processes (ranvier.workers): the bus feeds this process's parts; room writes and
        inbound PDUs go to the room's persister."""
        assert self.worker_runtime is not None and self.replication_client is not None
        self.worker_runtime.wire(self)
        router = self.pdu_router = PduRouter(
            self.plan, self.replication_client, self.incoming_pdus.receive_pdus
        )
        self.inbound_transactions.route_pdus = router.receive_pdus
        # PDUs queued during a join, processed at start by the background process: each room's by its owner.
        self.remote_membership.process_pdus = router.receive_pdus
        # Remote joins, invites of other servers' users and invite rejections: by the room's persister.
        self.membership.remote = ForwardingRemoteMembership(
            self.remote_membership, self.plan, self.replication_client, self.storage
        )
        meta = self.storage.events.get_event_meta
        self.incoming_pdus.deferred.wrap_retry(lambda local: router.route_retries(local, meta))

    async def _local_alias(self, alias: str) -> str | None:
        """The room of one of our aliases (None for another server's, or an unknown one)."""
        record = await self.storage.aliases.get_alias(alias)
        return record.room_id if record is not None else None

    def _membership_handler(self) -> MembershipHandler:
        """The resident side of federation membership; with workers, of rooms another process persists
        handed to it."""
        if self.replication_client is None:
            return self.resident
        return ForwardingMembership(self.resident, self.plan, self.replication_client)

    async def _start_replication_listener(self) -> None:
        """Loopback only: the client API for writes forwarded by the other processes (their rate limits
        were applied there), the PDUs an inbound worker hands over, and /health."""
        inst = self.plan.instance
        workers = self.config.workers
        assert inst is not None and inst.replication is not None and workers is not None
        if self.plan.persists_events:
            app = self._client_app(internal=True)
        else:
            self._guard("replication", self.config.request_limits.max_federation_send_body_bytes)
            app = web.Application(client_max_size=self.config.request_limits.max_federation_send_body_bytes)
        add_internal_routes(app, workers.secret, self.plan.name, self.incoming_pdus.receive_pdus)
        presence_owner = self.worker_runtime.presence_owner if self.worker_runtime is not None else None
        if presence_owner is not None:
            add_presence_route(app, workers.secret, presence_owner)
        if self.plan.persists_events:
            add_send_event_route(app, workers.secret, self.creator)
            add_membership_route(app, workers.secret, self.resident)
            if isinstance(self.creator, ForwardingCreator):
                add_persist_built_route(app, workers.secret, self.creator, self.persister)
            add_remote_membership_route(app, workers.secret, self.remote_membership, self.knocks)
            if self.backfiller is not None:
                add_backfill_route(app, workers.secret, self.backfiller)
            add_purge_route(app, workers.secret, self.plan, self._purge_here)
        app.router.add_route("GET", "/health", health_handler(self.storage.db).handler)
        await self._start_site("replication", app, inst.replication.bind, inst.replication.port, None)

    def _client_app(self, internal: bool = False) -> web.Application:
        config = self.config
        max_body = config.request_limits.max_client_body_bytes
        max_upload = config.media.max_upload_size

        def body_limit(request: web.Request) -> int:
            # Media uploads go up to max_upload_size (streamed to disk by their handler); the rest is JSON.
            return max_upload if is_upload(request) else max_body

        guard = self._guard(
            "replication" if internal else "client", max(max_body, max_upload), body_limit, streamed=is_upload
        )
        # With workers, a knock on a room another process persists is made there (ranvier.workers).
        knocks = KnockService if self.replication_client is None else ForwardingKnockService
        self.knocks = knocks(
            self.storage,
            self.creator,
            self.membership,
            self.server_name,
            self.signing_key,
            resident=self.resident,
            client=self.federation_client if config.federation.enabled else None,
        )
        if isinstance(self.knocks, ForwardingKnockService):
            self.knocks.plan, self.knocks.replication = self.plan, self.replication_client
        app = web.Application(
            middlewares=[
                # Outermost: the request id and database time cover everything, and it writes the answer.
                access_log_middleware(
                    "client", x_forwarded=config.listeners.client.x_forwarded, tracing=self.tracing
                ),
                cors_middleware,  # so that error responses carry the headers too
                metrics_middleware(self.metrics, "client"),
                matrix_error_middleware,
                *(
                    []
                    if internal  # forwarded by another of our processes, which applied the limits
                    else [
                        rate_limit_middleware(
                            config.rate_limits,
                            unlimited_tokens={s.as_token for s in self.appservices.all if not s.rate_limited},
                            appservice_tokens={s.as_token for s in self.appservices.all if s.rate_limited},
                            override_for=self.admin_api.policy.override_for,
                        )
                    ]
                ),
                # Room writes of rooms another process persists are handed to it (ranvier.workers).
                *(
                    [forwarding_middleware(self.plan, self.replication_client, self._local_alias)]
                    if self.replication_client is not None and not internal
                    else []
                ),
                # Shadow bans and blocked rooms (ranvier.admin.policy).
                self.admin_api.policy.middleware(),
                # Admin decisions taken here are re-read by the other processes (ranvier.workers).
                *([] if self.worker_runtime is None else [self.worker_runtime.admin_change_middleware()]),
                body_limits_middleware(guard),
            ],
            client_max_size=max_body,
        )
        handlers: list[Any] = [
            # Only a configured public_baseurl is advertised: the listener's bind address and port (0.0.0.0,
            # or 0 for an ephemeral port) say nothing of how clients reach us, and a wrong base_url sends
            # them astray, where a 404 tells them to keep the URL they have (CS "Well-known URIs").
            VersionsHandlers(config.public_baseurl),
            AccountHandlers(
                self.storage,
                self.server_name,
                registration_enabled=config.registration.enabled,
                shared_secret=config.registration.shared_secret,
                authenticator=self.authenticator,
                on_profile_changed=ProfilePropagator(self.storage, self.creator).on_profile_changed,
                issuer=TokenIssuer(
                    self.storage.devices,
                    self.storage.account_tokens,
                    access_token_lifetime_ms=None
                    if config.accounts.access_token_lifetime is None
                    else int(config.accounts.access_token_lifetime * 1000),
                    login_token_lifetime_ms=int(config.accounts.login_token_lifetime * 1000),
                    users=self.storage.users,
                ),
                login_get_token=config.accounts.login_get_token,
                set_displayname=config.accounts.set_displayname,
                set_avatar_url=config.accounts.set_avatar_url,
                remote_profile=self.remote_profiles.lookup if config.federation.enabled else None,
                registration_tokens=self.admin_api.store if config.registration.requires_token else None,
            ),
            RoomHandlers(
                self.storage,
                self.creator,
                self.membership,
                self.authenticator,
                self.server_name,
                config.rooms.default_room_version,
                self.history_visibility,
                config.rooms.encryption_enabled_by_default_for_room_type,
            ),
            MessageHandlers(
                self.storage,
                self.authenticator,
                self.backfiller.backfill if self.backfiller else None,
                self.history_visibility,
            ),
            SyncHandlers(
                self.storage,
                self.authenticator,
                self.typing,
                self.sync_notifier,
                self.history_visibility,
                e2ee=self.e2ee_sync,
                presence=PresenceSync(self.presence_store, self.presence),
            ),
            SlidingSyncHandlers.create(
                self.storage,
                self.authenticator,
                self.typing,
                self.sync_notifier,
                self.history_visibility,
                self.e2ee_sync,
                self.to_device,
            ),
            CapabilitiesHandlers(self.authenticator, config.rooms.default_room_version, config.accounts),
            VoipHandlers(self.authenticator, config.voip, config.accounts),
            AccountModerationHandlers(self.storage, self.authenticator, self.server_name),
            RegistrationTokenValidity(
                self.admin_api.store if config.registration.requires_token else None,
                config.registration.enabled,
            ),
            EphemeralHandlers(
                self.storage,
                self.authenticator,
                self.typing,
                self.sync_notifier,
                self.federation_sender if config.federation.enabled else None,
            ),
            AccountDataHandlers(self.storage, self.authenticator, self.sync_notifier),
            LegacyHandlers(self.storage, self.authenticator, self.history_visibility),
            TagHandlers(self.storage, self.authenticator, self.sync_notifier),
            SearchHandlers(
                self.storage,
                self.authenticator,
                RoomEventSearch(self.storage, self.history_visibility),
                BundledAggregations(self.storage, self.history_visibility),
            ),
            UserDirectoryHandlers(
                self.storage, self.authenticator, search_all_users=config.user_directory.search_all_users
            ),
            PresenceHandlers(self.presence, self.authenticator),
            PushRuleHandlers(self.authenticator, self.storage, self.sync_notifier.notify),
            NotificationHandlers(self.storage, self.authenticator),
            PusherHandlers(self.storage, self.authenticator, self.push_delivery.wake),
            DirectoryHandlers(self.storage, self.authenticator, self.server_name, self.membership),
            KnockHandlers(self.knocks, self.authenticator),
            SpaceHandlers(self.spaces, self.membership, self.authenticator),
            TimestampHandlers(
                self.storage,
                TimestampLookup(
                    self.storage,
                    self.server_name,
                    self.federation_client if config.federation.enabled else None,
                    self.backfiller.backfill if self.backfiller else None,
                ),
                self.history_visibility,
                self.authenticator,
            ),
            RoomUpgradeHandlers(
                RoomUpgrader(self.storage, self.creator, self.persister, self.membership, self.server_name),
                self.authenticator,
            ),
            AppServiceHandlers(
                self.authenticator, self.appservice_client, self.appservice_pusher, self.storage.rooms
            ),
        ]
        if config.federation.enabled:
            # Admin API: per-destination federation state (back-off, queue), Synapse's shape.
            handlers.append(FederationAdminHandlers(self.storage, self.authenticator, self.federation_sender))
            # Admin API: rooms joined with partial state, with their resync's attempts and last error.
            handlers.append(PartialStateAdminHandlers(self.storage, self.admin_api.access))
            # Room check: compare a room with every server in it (ranvier room-check, the DAG page).
            checker = RoomChecker(
                self.storage,
                self.federation_client,
                self.server_name,
                # A repair's PDUs are judged by the room's persister (ranvier.workers).
                self.incoming_pdus.receive_pdus if self.pdu_router is None else self.pdu_router.receive_pdus,
                self.federation_sender.send_pdu_to,
            )
            handlers.append(RoomCheckHandlers(checker, self.authenticator))
        account = next(h for h in handlers if isinstance(h, AccountHandlers))
        # /members and /joined_members of a partial-state room wait (bounded) for its full state.
        members_wait = config.rooms.partial_state_members_wait
        next(h for h in handlers if isinstance(h, RoomHandlers)).wait_full_state = lambda room_id: (
            self.partial_resync.wait_if_partial(room_id, members_wait)
        )
        # An initial /sync without lazy-loading waits (bounded) for rooms in their first resync attempt.
        sync_wait = config.rooms.partial_state_sync_wait
        next(h for h in handlers if isinstance(h, SyncHandlers)).wait_partial_rooms = lambda rooms: (
            self.partial_resync.wait_for_first_attempts(rooms, sync_wait)
        )
        account_manage = AccountManagementHandlers(
            self.storage,
            self.authenticator,
            account.require_password_uia,
            self.deactivator,
            self.server_name,
            password_change=config.accounts.password_change,
            openid_token_lifetime_ms=int(config.accounts.openid_token_lifetime * 1000),
        )
        # S2S "OpenID": third parties check our users' OpenID tokens on the federation listener (once: the
        # replication listener's copy of the client API must not add them again).
        if not internal:
            self.federation_app_setup.append(account_manage.add_federation_routes)
        handlers += [
            account_manage,
            KeyHandlers(
                self.key_service, self.device_lists, self.authenticator, account.require_password_uia
            ),
            ToDeviceHandlers(self.to_device, self.authenticator),
            RoomKeyHandlers(KeyBackups(self.storage), self.authenticator),
            MediaHandlers(
                self.media,
                self.authenticator,
                upload_limiter=RateLimiter(
                    RateSpec(config.media.upload_rate.per_second, config.media.upload_rate.burst)
                )
                if config.rate_limits.enabled
                else None,
                upload_timeout=config.media.upload_timeout,
                freeze_after_ms=config.media.freeze_unauthenticated_after_ms,
                previewer=self.url_previewer,
            ),
            MediaAdminHandlers(self.media, self.authenticator),
            *self.admin_api.handlers(),
            # The room-DAG page and its JSON (admins only).
            RoomDagHandlers(self.storage, self.storage.db, self.authenticator),
        ]
        if self.appservices:
            directory = next(h for h in handlers if isinstance(h, DirectoryHandlers))
            directory.alias_query = self.appservice_queries.query_alias
            account.user_query = self.appservice_queries.query_user
            rooms = next(h for h in handlers if isinstance(h, RoomHandlers))
            rooms.user_query = self.appservice_queries.query_user
            appservice = next(h for h in handlers if isinstance(h, AppServiceHandlers))
            directory.network_rooms = appservice.network_rooms
        presence = getattr(self, "presence", None)  # ranvier.presence, when it is wired
        if presence is not None:
            legacy = next(h for h in handlers if isinstance(h, LegacyHandlers))
            legacy.presence_events = presence_events_of(presence)
        sync_handlers = next(h for h in handlers if isinstance(h, SyncHandlers))
        sync_handlers.tracing, sync_handlers.origins = self.tracing, self.event_origins
        for h in handlers:
            app.add_routes(h.routes())
        return app

    async def _start_site(
        self, name: str, app: web.Application, bind: str, port: int, ssl_ctx: ssl.SSLContext | None
    ) -> None:
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=10)
        await runner.setup()
        guard = self.guards[name] if name in self.guards else self._guard(name, 0)
        site = GuardedSite(runner, bind, port, guard, ssl_context=ssl_ctx)
        await site.start()
        self._runners.append(runner)
        self.ports[name] = site.bound_port

    async def _start_client_listener(self) -> None:
        listener = self.config.listeners.client
        app = self._client_app()
        app.router.add_route("GET", "/health", health_handler(self.storage.db).handler)
        await self._start_site("client", app, listener.bind, listener.port, None)

    async def _start_federation_listener(self) -> None:
        listener = self.config.listeners.federation
        limits = self.config.request_limits
        send_max, other_max = limits.max_federation_send_body_bytes, limits.max_federation_body_bytes

        def body_limit(request: web.Request) -> int:
            return send_max if request.path.startswith(FEDERATION_SEND_PREFIX) else other_max

        guard = self._guard("federation", max(send_max, other_max), body_limit)
        app = web.Application(
            middlewares=[
                access_log_middleware("federation", x_forwarded=listener.x_forwarded, tracing=self.tracing),
                metrics_middleware(self.metrics, "federation"),
                # A validly signed request from a server ends our back-off towards it (federation sender).
                origin_seen_middleware(self.federation_sender.mark_reachable),
                body_limits_middleware(guard),
            ],
            client_max_size=max(send_max, other_max),
        )
        add_key_routes(app, self.keyring, self.server_name)
        app.router.add_route("GET", "/health", health_handler(self.storage.db).handler)
        for setup in self.federation_app_setup:
            setup(app)
        ssl_ctx = None
        if listener.tls:
            cert = Path(listener.tls_certificate_path or Path(self.config.data_dir) / "tls.crt")
            key = Path(listener.tls_private_key_path or Path(self.config.data_dir) / "tls.key")
            if not cert.exists() or not key.exists():
                host = (
                    self.server_name.rsplit(":", 1)[0]
                    if not self.server_name.endswith("]")
                    else self.server_name
                )
                generate = (
                    generate_self_signed_cert_in_child
                    if self._certificate_in_child
                    else generate_self_signed_cert
                )
                generate(cert, key, dns_names=(host.strip("[]"), "localhost"))
                logger.warning(
                    "generated a self-signed federation certificate at %s (fine for tests only)", cert
                )
            ssl_ctx = server_ssl_context(cert, key)
        await self._start_site("federation", app, listener.bind, listener.port, ssl_ctx)

    async def _start_metrics_listener(self) -> None:
        listener = self.config.listeners.metrics
        app = web.Application(
            middlewares=[access_log_middleware("metrics", x_forwarded=listener.x_forwarded)]
        )
        app.router.add_get("/metrics", self.metrics.handler)
        app.router.add_route("GET", "/health", health_handler(self.storage.db).handler)
        await self._start_site("metrics", app, listener.bind, listener.port, None)

    async def stop(self) -> None:
        loop_lag: LoopLagMonitor | None = getattr(self, "loop_lag", None)
        if loop_lag is not None:
            await loop_lag.stop()
        if self.worker_runtime is not None:
            await self.worker_runtime.stop()
        if self.replication_client is not None:
            await self.replication_client.close()
        # Stop accepting and let in-flight requests finish (runner.cleanup waits for them), then close
        # storage: every acknowledged write was committed before its response, so nothing is flushed here.
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        if hasattr(self, "admin_api"):
            await self.admin_api.stop()
        if hasattr(self, "presence"):
            await self.presence.stop()
        if hasattr(self, "appservice_ephemeral"):
            await self.appservice_ephemeral.stop()
        if hasattr(self, "push_housekeeping"):
            await self.push_housekeeping.stop()
        if hasattr(self, "push_delivery"):
            await self.push_delivery.stop()
        if hasattr(self, "appservice_pusher"):
            await self.appservice_pusher.stop()
            await self.appservice_client.close()
        if hasattr(self, "partial_resync"):
            await self.partial_resync.stop()
        if hasattr(self, "federation_sender"):
            await self.federation_sender.stop()
        gap_filler: GapFiller | None = getattr(self, "gap_filler", None)
        if gap_filler is not None:
            await gap_filler.stop()
        if hasattr(self, "incoming_pdus"):
            await self.incoming_pdus.close()
        if hasattr(self, "resident"):
            await self.resident.wait_for_healing()
        if hasattr(self, "device_lists"):
            await self.device_lists.stop()
        remote_media: RemoteMediaFetcher | None = getattr(self, "remote_media", None)
        if remote_media is not None:
            await remote_media.close()
        previewer: UrlPreviewer | None = getattr(self, "url_previewer", None)
        if previewer is not None:
            await previewer.close()
        if hasattr(self, "federation_client"):
            await self.federation_client.close()
        if self._storage is not None:
            await self._storage.db.close()
            self._storage = None
        tracing: Tracing | None = getattr(self, "tracing", None)
        if tracing is not None:
            # Flushes the spans still buffered: blocking, so in a worker thread (the exporter may be talking
            # to a collector served by this very event loop, as in the tests).
            await asyncio.to_thread(tracing.shutdown)


async def run_homeserver(config: HomeserverConfig, worker: str = MAIN) -> None:
    hs = Homeserver(config, worker, certificate_in_child=True)
    # The handlers go in before start(): the client listener answers before start() has returned, so a
    # supervisor (or a test) may already signal us, and SIGHUP's default action would end the process.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log_config = config.log_config
    if log_config is not None:
        # SIGHUP re-reads the logging configuration (a broken file is reported, the current one kept).
        loop.add_signal_handler(signal.SIGHUP, log_configure.reload, log_config)
    await hs.start()
    # Start-up's garbage collected, what it keeps frozen out of the collector's way, what it freed given
    # back to the system (idle RSS).
    settle_after_start()
    await stop.wait()
    logger.info("shutting down")
    await hs.stop()
