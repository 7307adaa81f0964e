"""Schema migrations: numbered SQL files applied in order, each in its own transaction.

Files live in ``migrations/`` beside this module and are named ``NNN_what.sql`` (both engines),
``NNN_what.sqlite.sql`` or ``NNN_what.postgres.sql`` (one engine only); the number orders them.
Statements are separated by a ``;`` at the end of a line, so a migration must not put one inside a string
literal at a line's end. The one dialect difference the runner bridges: ``WITHOUT ROWID`` (SQLite's layout
for tables keyed by their primary key) is dropped for PostgreSQL, which has no such option.

The applied numbers are recorded in ``schema_migrations``. A database that has a number this code does not
know was written by a newer Ranvier, and opening it is refused rather than risking a silent corruption.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from .engine import Database

_FILE = re.compile(r"^(\d+)_[a-z0-9_]+(?:\.(sqlite|postgres))?\.sql$")
# An arbitrary constant: serializes migrations of several processes starting at once on PostgreSQL.
_PG_LOCK_KEY = 0x52414E56


class SchemaTooNew(Exception):
    def __init__(self, db_version: int, code_version: int) -> None:
        super().__init__(
            f"the database schema is at version {db_version}, newer than this code's {code_version}: "
            "run a newer Ranvier or restore a backup"
        )
        self.db_version = db_version
        self.code_version = code_version


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def split_statements(sql: str) -> list[str]:
    statements: list[str] = []
    current: list[str] = []
    for line in sql.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("--")):
            continue
        current.append(line)
        if stripped.endswith(";"):
            statements.append("\n".join(current).rstrip().rstrip(";"))
            current = []
    if any(line.strip() and not line.strip().startswith("--") for line in current):
        statements.append("\n".join(current))
    return statements


def load_migrations(dialect: str) -> list[Migration]:
    """The migrations that apply to ``dialect``, ordered by version (then by file name)."""
    found = []
    for entry in resources.files(__package__).joinpath("migrations").iterdir():
        m = _FILE.match(entry.name)
        if m is None or (m.group(2) is not None and m.group(2) != dialect):
            continue
        found.append(Migration(int(m.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda mig: (mig.version, mig.name))


async def migrate(db: Database, migrations: list[Migration] | None = None) -> int:
    """Bring the schema up to date; returns the resulting version. Raises SchemaTooNew."""
    if migrations is None:
        migrations = load_migrations(db.dialect)
    code_version = max((m.version for m in migrations), default=0)
    async with db.transaction() as txn:
        if db.dialect == "postgres":
            await txn.execute(f"SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})")
        await txn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL)"
        )
        applied = {row[0] for row in await txn.fetchall("SELECT version FROM schema_migrations")}
        db_version = max(applied, default=0)
        if db_version > code_version:
            raise SchemaTooNew(db_version, code_version)
        # One transaction for all pending files: a crash half-way leaves the schema as it was.
        for version in sorted({m.version for m in migrations} - applied):
            files = [m for m in migrations if m.version == version]
            for mig in files:
                for statement in split_statements(mig.sql):
                    if db.dialect == "postgres":
                        statement = statement.replace(") WITHOUT ROWID", ")")
                    await txn.execute(statement)
            await txn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                (version, ", ".join(m.name for m in files)),
            )
    return max(code_version, db_version)
