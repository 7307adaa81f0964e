"""``SqlStorage``: every table family over one database, the object ``open_storage`` returns.

The room/event stores (``RoomStorage``) share caches and the stream position; the other families each
wrap the database on their own. Callers see this object through ``ranvier.storage.protocols.composite
.Storage``; this class only wires it.
"""

from __future__ import annotations

from . import RoomStorage
from .account_data import AccountDataStore
from .account_tokens import AccountTokenStore
from .aliases import AliasStore
from .client_txns import ClientTxnStore
from .devices import DeviceStore
from .directory import DirectoryStore
from .e2ee_backup import KeyBackupStore
from .e2ee_keys import E2eKeyStore
from .e2ee_streams import DeviceListStore, ToDeviceStore
from .engine import Database
from .filters import FilterStore
from .inbound_txns import InboundTxnStore
from .outbox import OutboxStore
from .partial_state import PartialStateStore
from .pending_join_pdus import PendingJoinPduStore
from .push_counts import PushActionStore
from .pushers import PusherStore
from .receipts import ReceiptStore
from .relations import RelationStore
from .search import SearchStore
from .server_keys import ServerKeyStore
from .user_directory import UserDirectoryStore
from .users import UserStore


class SqlStorage:
    """The table families as attributes (the schema of the non-room ones comes from the 050-099
    migrations, applied by the shared runner)."""

    def __init__(self, room: RoomStorage) -> None:
        db = room.db
        self.db = db
        # Room/event storage (ranvier.storage.interfaces).
        self.rooms = room.rooms
        self.events = room.events
        self.state = room.state
        self.stream = room.stream
        self.state_groups = room.state_groups
        # Accounts.
        self.users = UserStore(db)
        self.devices = DeviceStore(db)
        self.account_tokens = AccountTokenStore(db)
        self.client_txns = ClientTxnStore(db)
        self.filters = FilterStore(db)
        self.account_data = AccountDataStore(db)
        # Federation.
        self.keys = ServerKeyStore(db)
        self.outbox = OutboxStore(db)
        self.inbound_txns = InboundTxnStore(db)
        self.pending_join_pdus = PendingJoinPduStore(db)
        self.partial_state = PartialStateStore(db)
        # Directories and search.
        self.aliases = AliasStore(db)
        self.directory = DirectoryStore(db)
        self.user_directory = UserDirectoryStore(db)
        self.search = SearchStore(db)
        # End-to-end encryption (to-device messages for other servers go through the outbox).
        self.e2e_keys = E2eKeyStore(db)
        self.device_lists = DeviceListStore(db)
        self.to_device = ToDeviceStore(db, self.outbox)
        self.key_backup = KeyBackupStore(db)
        # Push.
        self.push_actions = PushActionStore(db)
        self.pushers = PusherStore(db)
        # Receipts and relations.
        self.receipts = ReceiptStore(db)
        self.relations = RelationStore(db)

    @classmethod
    async def open(
        cls, db: Database, *, cached_events: int = 10_000, cached_state_entries: int = 1_000_000
    ) -> SqlStorage:
        """Over a migrated database, with ``RoomStorage.open``'s cache bounds."""
        room = await RoomStorage.open(
            db, cached_events=cached_events, cached_state_entries=cached_state_entries
        )
        return cls(room)
