"""``Storage``: the whole storage object as the server's layers see it, one attribute per table family.

``app.py`` builds it (``open_storage`` returns a ``SqlStorage``) and hands it to the services; each family
is typed with its Protocol, so a service depends on what it asks of storage, not on the SQL classes.
Attributes are read-only properties so that the concrete class may hold a narrower type.
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
from .push import PushActionStorage, PusherStorage


class Storage(Protocol):
    # The engine itself: for the few services with tables of their own (media, presence, admin, ...) and
    # for transactions spanning families.
    @property
    def db(self) -> Database: ...

    # Rooms and events (ranvier.storage.interfaces).
    @property
    def rooms(self) -> RoomStore: ...
    @property
    def events(self) -> EventStore: ...
    @property
    def state(self) -> StateStore: ...
    @property
    def stream(self) -> StreamStore: ...

    # Accounts.
    @property
    def users(self) -> UserStorage: ...
    @property
    def devices(self) -> DeviceStorage: ...
    @property
    def account_tokens(self) -> AccountTokenStorage: ...
    @property
    def client_txns(self) -> ClientTxnStorage: ...
    @property
    def filters(self) -> FilterStorage: ...
    @property
    def account_data(self) -> AccountDataStorage: ...

    # Federation.
    @property
    def keys(self) -> ServerKeyStorage: ...
    @property
    def outbox(self) -> OutboxStorage: ...
    @property
    def inbound_txns(self) -> InboundTxnStorage: ...
    @property
    def pending_join_pdus(self) -> PendingJoinPduStorage: ...

    # Directories and search.
    @property
    def aliases(self) -> AliasStorage: ...
    @property
    def directory(self) -> DirectoryStorage: ...
    @property
    def user_directory(self) -> UserDirectoryStorage: ...
    @property
    def search(self) -> SearchStorage: ...

    # End-to-end encryption.
    @property
    def e2e_keys(self) -> E2eKeyStorage: ...
    @property
    def device_lists(self) -> DeviceListStorage: ...
    @property
    def to_device(self) -> ToDeviceStorage: ...
    @property
    def key_backup(self) -> KeyBackupStorage: ...

    # Push.
    @property
    def push_actions(self) -> PushActionStorage: ...
    @property
    def pushers(self) -> PusherStorage: ...

    # Receipts and relations.
    @property
    def receipts(self) -> ReceiptStorage: ...
    @property
    def relations(self) -> RelationStorage: ...


if TYPE_CHECKING:
    from ..sql.storage import SqlStorage

    def _sql_storage_satisfies_the_protocol(storage: SqlStorage) -> None:
        # Never called: mypy checks this assignment (every family's SQL class against its Protocol).
        _: Storage = storage
