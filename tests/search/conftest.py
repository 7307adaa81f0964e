"""The storage suite's database fixtures (SQLite and PostgreSQL) and the in-process server fixtures."""

from tests.scenarios.conftest import servers, session
from tests.storage.conftest import db, db_spec, raw_db, storage

__all__ = ["db", "db_spec", "raw_db", "servers", "session", "storage"]
