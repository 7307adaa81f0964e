"""Wires the auxiliary table families onto the ``Storage`` object (called by ``open_storage``)."""

from __future__ import annotations

from typing import Any

from .sql.account_data import AccountDataStore
from .sql.account_tokens import AccountTokenStore
from .sql.aliases import AliasStore
from .sql.client_txns import ClientTxnStore
from .sql.devices import DeviceStore
from .sql.directory import DirectoryStore
from .sql.e2ee_backup import KeyBackupStore
from .sql.e2ee_keys import E2eKeyStore
from .sql.e2ee_streams import DeviceListStore, ToDeviceStore
from .sql.engine import Database
from .sql.inbound_txns import InboundTxnStore
from .sql.outbox import OutboxStore
from .sql.pending_join_pdus import PendingJoinPduStore
from .sql.push_counts import PushActionStore
from .sql.pushers import PusherStore
from .sql.receipts import ReceiptStore
from .sql.relations import RelationStore
from .sql.search import SearchStore
from .sql.server_keys import ServerKeyStore
from .sql.user_directory import UserDirectoryStore
from .sql.users import UserStore

AUX_ATTRIBUTES = (
    "users",
    "devices",
    "aliases",
    "directory",
    "account_data",
    "receipts",
    "keys",
    "outbox",
    "inbound_txns",
    "pending_join_pdus",
    "client_txns",
    "e2e_keys",
    "device_lists",
    "to_device",
    "key_backup",
    "push_actions",
    "pushers",
    "account_tokens",
    "search",
    "user_directory",
    "relations",
)


def attach_aux(storage: Any, db: Database | None = None) -> None:
    """Set ``storage.users``, ``storage.devices``, ... (see AUX_ATTRIBUTES) over ``db`` (default
    ``storage.db``). The schema comes from the 050-099 migrations, applied by the shared runner."""
    database: Database = db if db is not None else storage.db
    storage.users = UserStore(database)
    storage.devices = DeviceStore(database)
    storage.aliases = AliasStore(database)
    storage.directory = DirectoryStore(database)
    storage.account_data = AccountDataStore(database)
    storage.receipts = ReceiptStore(database)
    storage.keys = ServerKeyStore(database)
    storage.outbox = OutboxStore(database)
    storage.inbound_txns = InboundTxnStore(database)
    storage.pending_join_pdus = PendingJoinPduStore(database)
    storage.client_txns = ClientTxnStore(database)
    storage.e2e_keys = E2eKeyStore(database)
    storage.device_lists = DeviceListStore(database)
    storage.to_device = ToDeviceStore(database, storage.outbox)
    storage.key_backup = KeyBackupStore(database)
    storage.push_actions = PushActionStore(database)
    storage.pushers = PusherStore(database)
    storage.account_tokens = AccountTokenStore(database)
    storage.search = SearchStore(database)
    storage.user_directory = UserDirectoryStore(database)
    storage.relations = RelationStore(database)
