"""``Storage``: the whole storage object as the server's layers see it, one attribute per table family.

``app.py`` builds it (``open_storage`` returns a ``SqlStorage``) and hands it on; each family is typed with
its Protocol, so a service depends on what it asks of storage, not on the SQL classes.

Each family also has a one-attribute Protocol (``HasEvents``, ``HasUsers``, ...): a module that needs only
some families names them, e.g. ``class MembershipStorage(HasRooms, HasEvents, HasState, Protocol)``, and
takes that instead of the whole ``Storage``. Attributes are read-only properties so that the concrete class
may hold a narrower type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ..interfaces import EventStore, RoomStore, StateStore, StreamStore
from ..sql.engine import Database
from .accounts import (
    AccountDataStorage,
    AccountTokenStorage,
    ClientTxnStorage,
    DeviceStorage,
    FilterStorage,
    UserStorage,
)
from .annotations import ReceiptStorage, RelationStorage
from .directory import AliasStorage, DirectoryStorage, SearchStorage, UserDirectoryStorage
from .e2ee import DeviceListStorage, E2eKeyStorage, KeyBackupStorage, ToDeviceStorage
from .federation import InboundTxnStorage, OutboxStorage, PendingJoinPduStorage, ServerKeyStorage
from .partial_state import PartialStateStorage
from .push import PushActionStorage, PusherStorage


# The engine itself: for the services with tables of their own (media, presence, admin, ...) and for
# transactions spanning families.
class HasDb(Protocol):
    @property
    def db(self) -> Database: ...


# Rooms and events (ranvier.storage.interfaces).
class HasRooms(Protocol):
    @property
    def rooms(self) -> RoomStore: ...


class HasEvents(Protocol):
    @property
    def events(self) -> EventStore: ...


class HasState(Protocol):
    @property
    def state(self) -> StateStore: ...


class HasStream(Protocol):
    @property
    def stream(self) -> StreamStore: ...


# Accounts.
class HasUsers(Protocol):
    @property
    def users(self) -> UserStorage: ...


class HasDevices(Protocol):
    @property
    def devices(self) -> DeviceStorage: ...


class HasAccountTokens(Protocol):
    @property
    def account_tokens(self) -> AccountTokenStorage: ...


class HasClientTxns(Protocol):
    @property
    def client_txns(self) -> ClientTxnStorage: ...


class HasFilters(Protocol):
    @property
    def filters(self) -> FilterStorage: ...


class HasAccountData(Protocol):
    @property
    def account_data(self) -> AccountDataStorage: ...


# Federation.
class HasServerKeys(Protocol):
    @property
    def keys(self) -> ServerKeyStorage: ...


class HasOutbox(Protocol):
    @property
    def outbox(self) -> OutboxStorage: ...


class HasInboundTxns(Protocol):
    @property
    def inbound_txns(self) -> InboundTxnStorage: ...


class HasPendingJoinPdus(Protocol):
    @property
    def pending_join_pdus(self) -> PendingJoinPduStorage: ...


class HasPartialState(Protocol):
    @property
    def partial_state(self) -> PartialStateStorage: ...


# Directories and search.
class HasAliases(Protocol):
    @property
    def aliases(self) -> AliasStorage: ...


class HasDirectory(Protocol):
    @property
    def directory(self) -> DirectoryStorage: ...


class HasUserDirectory(Protocol):
    @property
    def user_directory(self) -> UserDirectoryStorage: ...


class HasSearch(Protocol):
    @property
    def search(self) -> SearchStorage: ...


# End-to-end encryption.
class HasE2eKeys(Protocol):
    @property
    def e2e_keys(self) -> E2eKeyStorage: ...


class HasDeviceLists(Protocol):
    @property
    def device_lists(self) -> DeviceListStorage: ...


class HasToDevice(Protocol):
    @property
    def to_device(self) -> ToDeviceStorage: ...


class HasKeyBackup(Protocol):
    @property
    def key_backup(self) -> KeyBackupStorage: ...


# Push.
class HasPushActions(Protocol):
    @property
    def push_actions(self) -> PushActionStorage: ...


class HasPushers(Protocol):
    @property
    def pushers(self) -> PusherStorage: ...


# Receipts and relations.
class HasReceipts(Protocol):
    @property
    def receipts(self) -> ReceiptStorage: ...


class HasRelations(Protocol):
    @property
    def relations(self) -> RelationStorage: ...


class Storage(
    HasDb,
    HasRooms,
    HasEvents,
    HasState,
    HasStream,
    HasUsers,
    HasDevices,
    HasAccountTokens,
    HasClientTxns,
    HasFilters,
    HasAccountData,
    HasServerKeys,
    HasOutbox,
    HasInboundTxns,
    HasPendingJoinPdus,
    HasPartialState,
    HasAliases,
    HasDirectory,
    HasUserDirectory,
    HasSearch,
    HasE2eKeys,
    HasDeviceLists,
    HasToDevice,
    HasKeyBackup,
    HasPushActions,
    HasPushers,
    HasReceipts,
    HasRelations,
    Protocol,
):
    """Every table family."""


if TYPE_CHECKING:
    from ..sql.storage import SqlStorage

    def _sql_storage_satisfies_the_protocol(storage: SqlStorage) -> None:
        # Never called: mypy checks this assignment (every family's SQL class against its Protocol).
        _: Storage = storage
