"""The run database: one schema (SQLAlchemy Core) served on SQLite or on PostgreSQL, and what
opening, checking, writing and losing each of them means.

Where the runs are kept is one setting:

    LORA_LAB_DB unset   an SQLite file, <LORA_LAB_HOME>/runs.db (WAL), with each run's weights a
                        safetensors file in <LORA_LAB_HOME>/runs/<uuid>/: the default, for one
                        machine, with nothing to install or start.
    LORA_LAB_DB=postgresql://user:password@host:5432/lora_lab
                        PostgreSQL through psycopg 3 (requirements-distributed.txt), with each
                        run's weights in the `weights` table: the safetensors bytes.

Why the weights go into PostgreSQL and not into a folder: with PostgreSQL, app servers and
training workers may run on different machines, and the database is the one thing they all
reach. A shared folder would need a network file system mounted at the same path on every
machine, and a run's rows and its file could disagree (the one saved, the other not); in the
database a run's outcome and its weights are committed in one transaction, and a deleted run
takes its weights with it. LoRA Lab's weights are kilobytes to tens of megabytes (ResNet-18
fully fine-tuned: 45 MB); a bytea holds up to 1 GB.

Both dialects use the same Table definitions and the same statements. What differs lives here:
SQLite's file checks (is it an SQLite file, is it LoRA Lab's, is it sound, can it be written;
reading a store that does not exist yet creates nothing), its transactions (BEGIN IMMEDIATE
takes the write lock first, so what a write reads stays true until it commits), and
PostgreSQL's connection: checked before each use (pool_pre_ping), a statement cut off by a lost
connection is tried once more on a new one, and meanwhile a caller gets a one-line StoreError
(Unreachable: a caller that can wait, such as a finished run being saved, tries again).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.pool import StaticPool

from core.common import paths
from core.store.outcome import FIGURES, STEP_FIELDS, RunOutcome, Step

APP_ID = "lora-lab"
SCHEMA_VERSION = 2  # 2: each run's own folder (uuid) and its process's start time
SETTING = "LORA_LAB_DB"
DRIVER = "postgresql+psycopg"
POSTGRES_SCHEMES = ("postgresql", "postgres", DRIVER)  # accepted in LORA_LAB_DB, all psycopg 3
CONNECT_TIMEOUT_S = 5  # an unreachable host is reported after this long, not after minutes
SET_UP_LOCK = 0x10_4A_1AB  # PostgreSQL advisory lock: two processes setting up one database
SQLITE_HEADER = b"SQLite format 3\x00"
# SQLite's answers when a store can be read but not written: open it read-only instead.
READ_ONLY_ERRORS = ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_FULL", "SQLITE_IOERR")
SQLITE_ADVICE = "move it away, or set LORA_LAB_HOME to another folder"
POSTGRES_ADVICE = f"set {SETTING} to a database of LoRA Lab's own"

T = TypeVar("T")


class StoreError(RuntimeError):
    """The run database cannot be used (or a run is missing); str() is the one-line message."""


class Unreachable(StoreError):
    """The PostgreSQL server at `where` did not answer (`why`: down, restarting, the network):
    what was committed stays committed, and the same call may work once it is back."""

    def __init__(self, where: str, why: str) -> None:
        super().__init__(
            f"the run database at {where} is not reachable ({why}): try again in a moment; "
            "nothing stored is lost"
        )
        self.where, self.why = where, why

    def __reduce__(self) -> tuple:
        return Unreachable, (self.where, self.why)


# -- the schema ------------------------------------------------------------------------------------
# A field's column: RunOutcome's figures, and a Step's figures past its number.
FIGURE_TYPES = {
    float | None: sa.Float,
    int | None: sa.Integer,
    float: sa.Float,
    str | None: sa.Text,  # a text run's sample (Step.sample)
}


def outcome_columns() -> list[sa.Column]:
    """A column for each figure of a run's outcome (RunOutcome's fields past its status and
    reason), in its order: NULL until the run ends, and where it has no such figure."""
    hints = get_type_hints(RunOutcome)
    return [sa.Column(name, FIGURE_TYPES[hints[name]]) for name in FIGURES]


def step_columns() -> list[sa.Column]:
    """A column for each figure of a step (Step's fields past its number), in its order."""
    hints = get_type_hints(Step)
    return [sa.Column(name, FIGURE_TYPES[hints[name]]) for name in STEP_FIELDS[1:]]


metadata = sa.MetaData()
RUN_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite: the rowid itself

meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", RUN_ID, primary_key=True, autoincrement=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("owner", sa.Text, nullable=False),
    sa.Column("config", sa.Text, nullable=False),  # RunConfig.to_dict() as JSON
    # running | finished | stopped | failed | unfinished | imported (an uploaded adapter)
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("pid", sa.Integer),  # the process training it, while it runs
    sa.Column("created", sa.Float, nullable=False),  # seconds since the epoch
    *outcome_columns(),  # seconds, test_acc_before, …: a run's figures (RunOutcome)
    sa.Column("torch_threads", sa.Integer),  # results are bit-identical only for equal counts
    sa.Column("has_weights", sa.Integer, nullable=False, server_default="0"),
    # Added since schema 1 (so they may be NULL: an older store gets them on opening, as it
    # gets a figure added since, such as source_acc_before).
    sa.Column("folder", sa.Text),  # its folder under runs/: a uuid; NULL (schema 1): its id
    sa.Column("pid_started", sa.Float),  # when the process `pid` started: a reused pid has another
    sa.Column("host", sa.Text),  # the machine of `pid` (NULL: this one; SQLite is one machine)
    sqlite_autoincrement=True,  # a deleted run's id is never given to another run
)
sa.Index("runs_by_owner", runs.c.owner, runs.c.id)  # an owner's latest runs
sa.Index("runs_by_status", runs.c.status)  # the running ones, repaired on opening
metrics = sa.Table(
    "metrics",
    metadata,
    sa.Column("run_id", RUN_ID, sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("step", sa.Integer, primary_key=True),  # (run_id, step): a run's steps in order
    *step_columns(),
)
snapshots = sa.Table(
    "snapshots",
    metadata,
    sa.Column("run_id", RUN_ID, sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("step", sa.Integer, primary_key=True),
    # {layer: {"sigma": [...], "delta_M": .., "delta_D": ..}} as JSON
    sa.Column("layers", sa.Text, nullable=False),
)
weights = sa.Table(  # PostgreSQL only: an SQLite store keeps them as files (see above)
    "weights",
    metadata,
    sa.Column("run_id", RUN_ID, sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),  # a safetensors file's bytes
)
students = sa.Table(  # the name a student gave, shown to the teacher beside their runs
    "students",
    metadata,
    sa.Column("owner", sa.Text, primary_key=True),  # the id the student's browser keeps
    sa.Column("name", sa.Text, nullable=False),
)
# -- the queues, written down (core/store/job_record.py reads and writes this table) ----------
jobs = sa.Table(  # every job a queue that keeps a record was given, and where it stands
    "jobs",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),  # the scheduler's job id
    sa.Column("queue", sa.Text, nullable=False),  # the name of the queue that holds it
    sa.Column("seq", sa.Integer, nullable=False),  # its submission order in that queue
    sa.Column("owner", sa.Text, nullable=False),
    sa.Column("config", sa.Text, nullable=False),  # RunConfig.to_dict() as JSON
    sa.Column("limits", sa.Text, nullable=False),  # its server's Limits as JSON (checked then)
    sa.Column("status", sa.Text, nullable=False),  # queued | started | finished|failed|stopped
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("tag", sa.Integer),  # its tag in the fair order when it started (FairQueue)
    sa.Column("run_id", RUN_ID),  # its run, once ended (no foreign key: a run may be deleted)
    sa.Column("submitted", sa.Float, nullable=False),  # seconds since the epoch
    sa.Column("started", sa.Float),
    sa.Column("ended", sa.Float),
    sa.Column("host", sa.Text, nullable=False),  # the process whose queue holds it: its machine,
    sa.Column("pid", sa.Integer, nullable=False),  # its id,
    sa.Column("pid_started", sa.Float),  # and when it started (a reused id is another process)
)
sa.Index("jobs_by_queue", jobs.c.queue, jobs.c.status)  # a queue's open jobs, read on restart
archived = sa.Table(  # a class's runs put away under the class's name (the Class page)
    "archived",
    metadata,
    sa.Column("run_id", RUN_ID, sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("class_name", sa.Text, nullable=False),
)
TABLES = {
    "sqlite": [meta, runs, metrics, snapshots, students, jobs, archived],
    "postgresql": [meta, runs, metrics, snapshots, students, weights, jobs, archived],
}
METRIC_COLUMNS = tuple(column.name for column in metrics.columns if column.name != "run_id")


def misfits(table: sa.Table, row: Mapping[str, Any]) -> list[str]:
    """The columns of `table` in `row` whose values are not of their column's kind. PostgreSQL
    holds each column to its type; SQLite keeps whatever a hand put there ('yesterday' in a
    REAL column, text for a process id), so a row read from it is checked before it is used.
    A whole number passes where a float goes; NULL only where the column allows it."""
    found = []
    for column in table.columns:
        if column.name not in row:
            continue
        value, kind = row[column.name], column.type.python_type
        kinds = (int, float) if kind is float else (kind,)
        fits = (value is None and column.nullable) or (
            isinstance(value, kinds) and not isinstance(value, bool)
        )
        if not fits:
            found.append(column.name)
    return found


def set_up(conn: sa.Connection) -> None:
    """Create what is missing (tables, indexes, columns added since schema 1, the meta rows)
    inside the caller's transaction. A store that is up to date is only read."""
    if conn.dialect.name == "postgresql":  # two processes setting up one database: one waits
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(SET_UP_LOCK)))
    tables = TABLES[conn.dialect.name]
    metadata.create_all(conn, tables=tables, checkfirst=True)
    for table in (runs, metrics):  # the tables that gain columns (a metric, a step's figure)
        have = {column["name"] for column in sa.inspect(conn).get_columns(table.name)}
        for column in table.columns:
            if column.name not in have:
                kind = column.type.compile(dialect=conn.dialect)
                conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}"))
    for table in tables:
        for index in table.indexes:
            index.create(conn, checkfirst=True)
    values = dict(conn.execute(sa.select(meta.c.key, meta.c.value)).all())
    wanted = {"app": APP_ID, "schema_version": str(SCHEMA_VERSION)}
    changed = [{"key": k, "value": v} for k, v in wanted.items() if values.get(k) != v]
    if changed:
        upsert(conn, meta, changed, ["key"])


def problem(conn: sa.Connection) -> str | None:
    """What makes this database not a LoRA Lab store that this version can use, or None: it
    is empty, or LoRA Lab's at this schema version or an older one."""
    tables = set(sa.inspect(conn).get_table_names())
    if not tables:
        return None
    if "meta" not in tables:
        return "it belongs to another program"
    values = dict(conn.execute(sa.select(meta.c.key, meta.c.value)).all())
    if values.get("app") != APP_ID:
        return "it belongs to another program"
    version = str(values.get("schema_version", 0))
    if not version.isdigit():
        return f"it is damaged: its schema version is {version!r}"
    if int(version) > SCHEMA_VERSION:
        return "it was made by a newer LoRA Lab"
    for table in TABLES[conn.dialect.name]:
        if table.name in tables and (found := _foreign_columns(conn, table)):
            return found
    return None


def _foreign_columns(conn: sa.Connection, table: sa.Table) -> str | None:
    """What makes the database's table of this name not LoRA Lab's, or None. An older store
    may lack a column that set_up adds (one that may be NULL); a column LoRA Lab never made,
    or the lack of one it always did, means another program's table, which set_up must not
    alter."""
    have = {column["name"] for column in sa.inspect(conn).get_columns(table.name)}
    unknown = sorted(have - set(table.columns.keys()))
    missing = sorted(c.name for c in table.columns if c.name not in have and not c.nullable)
    if not (unknown or missing):
        return None
    found = [f"columns {', '.join(unknown)} LoRA Lab never made"] if unknown else []
    found += [f"no column {', '.join(missing)}"] if missing else []
    return f"it belongs to another program: its table {table.name} has {' and '.join(found)}"


def upsert(conn: sa.Connection, table: sa.Table, rows: list[dict], keys: list[str]) -> None:
    """Insert `rows`, replacing a row with the same `keys` (the same statement on both
    dialects: SQLite and PostgreSQL share INSERT … ON CONFLICT … DO UPDATE)."""
    if not rows:
        return
    insert = (sqlite.insert if conn.dialect.name == "sqlite" else postgresql.insert)(table)
    changes = {name: insert.excluded[name] for name in rows[0] if name not in keys}
    conn.execute(insert.on_conflict_do_update(index_elements=keys, set_=changes), rows)


# -- where the store is ---------------------------------------------------------------------------
def configured() -> str | None:
    """LORA_LAB_DB, if it is set."""
    return os.environ.get(SETTING, "").strip() or None


def postgres_url(text: str) -> sa.URL:
    """LORA_LAB_DB read as a PostgreSQL URL for psycopg 3; StoreError naming the setting if it
    is not one. The text itself is never repeated: it may hold a password."""
    scheme = text.split("://", 1)[0].lower() if "://" in text else None
    if scheme not in POSTGRES_SCHEMES:
        got = f"it begins with {scheme}://" if scheme else "it is not a URL"
        raise StoreError(
            f"{SETTING} must be a postgresql:// URL such as "
            f"postgresql://user:password@host:5432/lora_lab ({got}); unset it to keep the runs "
            "in an SQLite file in LORA_LAB_HOME"
        )
    try:
        url = sa.make_url(text)
    except (sa.exc.ArgumentError, ValueError) as error:
        raise StoreError(f"{SETTING} is not a valid URL ({one_line(error)})") from None
    if not url.database:
        raise StoreError(f"{SETTING} must name a database: postgresql://…/lora_lab")
    return url.set(drivername=DRIVER)


def open_database(location: str | Path, on_open: Callable[[sa.Connection], Any]) -> Database:
    """The database at `location`: a postgresql:// URL (str), or the path of an SQLite file.
    `on_open(conn)` runs in a write transaction once it is opened (runs.py repairs the runs of
    dead processes there); if that cannot be written, the store can still be read."""
    if isinstance(location, str) and "://" in location:
        return PostgresDatabase(postgres_url(location), on_open)
    return SqliteDatabase(Path(location), on_open)


# -- messages --------------------------------------------------------------------------------------
def one_line(error: BaseException) -> str:
    """An error's text on one line: the driver's own error, not SQLAlchemy's wrapping of it
    (which adds the statement and a link)."""
    original = getattr(error, "orig", None) or error
    return " ".join(str(original).split())


def unusable(where: str, why: str, advice: str) -> str:
    return (
        f"{where} cannot be used as the LoRA Lab run database ({why}). It was left untouched: "
        f"{advice}."
    )


def not_written(what: str, where: str, why: str) -> str:
    return f"cannot {what}: {where} cannot be written ({why}). Nothing was changed in it"


# -- SQLite ----------------------------------------------------------------------------------------
class SqliteDatabase:
    """One SQLite file, shared by the threads of a process through one connection (and a lock),
    and by several processes through SQLite's own locks.

    The file is opened on first use and created on the first write, so a command that is
    refused, or only reads, leaves no empty database behind. If the file at `path` is moved
    or replaced while it is open, the database follows the path (a server keeps working):
    `identity()` tells the file there now from `opened()`, the one open.
    """

    def __init__(self, path: Path, on_open: Callable[[sa.Connection], Any]) -> None:
        self.path = path
        self.where = str(path)
        self.weights_dir: Path | None = path.parent / "runs"
        self.read_only: str | None = None  # why the open file cannot be written, if so
        self._on_open = on_open
        self._lock = threading.RLock()
        self._engine: sa.Engine | None = None
        self._opened: tuple[int, int] | None = None  # the file _engine has open
        self._empty: sa.Engine | None = None  # what reading a missing store reads
        with self._lock:
            self._current(write=False)  # a foreign or damaged file is refused at once

    def run(self, work: Callable[[sa.Connection], T], what: str | None = None) -> T:
        """`work(conn)` in one transaction: a read, or with `what` a write ("cannot <what>: …"
        if it fails: a full disk, a read-only file). Nothing is written if it fails."""
        with self._lock:
            engine = self._current(write=what is not None)
            if what is not None and self.read_only:
                raise StoreError(not_written(what, self.where, self.read_only))
            try:
                return _transaction(engine, work, write=what is not None)
            except sa.exc.OperationalError as error:
                if what is None:
                    raise StoreError(unusable(self.where, one_line(error), SQLITE_ADVICE)) from None
                raise StoreError(not_written(what, self.where, one_line(error))) from None
            except sa.exc.DBAPIError as error:
                raise StoreError(unusable(self.where, one_line(error), SQLITE_ADVICE)) from None

    def writable(self) -> bool:
        """Whether the store exists and can be written."""
        with self._lock:
            return self._current(write=False) is not self._empty and not self.read_only

    def identity(self) -> tuple[int, int] | None:
        return _identity(self.path)

    def opened(self) -> tuple[int, int] | None:
        return self._opened

    def files(self) -> list[Path]:
        """The database's files, which nothing may ever be written over."""
        return [Path(f"{self.path}{end}") for end in ("", "-wal", "-shm", "-journal")]

    def close(self) -> None:
        with self._lock:
            for engine in (self._engine, self._empty):
                if engine is not None:
                    engine.dispose()
            self._engine = self._empty = None

    def _current(self, write: bool) -> sa.Engine:
        """The file at `path` now (opened, or for writing created, here); to read a store that
        does not exist yet, an empty one in memory."""
        identity = _identity(self.path)
        if self._engine is not None and (identity != self._opened or (write and self.read_only)):
            self._engine.dispose()  # moved or replaced; or read-only before, perhaps not now
            self._engine = None
        if self._engine is None:
            if identity is None and not write:
                return self._empty_store()
            self._engine = self._open()
            self._opened = _identity(self.path)
        return self._engine

    def _open(self) -> sa.Engine:
        """Connect to the file (creating it): set up or upgrade its tables, then `on_open`. A
        file that can be read but not written is opened read-only (`read_only` says why):
        reading works, each write is a StoreError."""
        _check_is_ours(self.path)
        self.read_only = None
        path = self.path
        engine = _sqlite_engine(lambda: _connect(path))
        try:
            _transaction(engine, set_up, write=True)
        except sa.exc.OperationalError as error:
            engine.dispose()
            name = str(getattr(error.orig, "sqlite_errorname", ""))
            if not path.is_file() or not name.startswith(READ_ONLY_ERRORS):
                raise StoreError(unusable(self.where, one_line(error), SQLITE_ADVICE)) from None
            self.read_only = one_line(error)
            engine = _sqlite_engine(lambda: _connect_read_only(path))
            engine.connect().close()  # (a StoreError now if it cannot even be read)
            return engine
        except sa.exc.DBAPIError as error:
            engine.dispose()
            raise StoreError(unusable(self.where, one_line(error), SQLITE_ADVICE)) from None
        with contextlib.suppress(sa.exc.OperationalError):
            _transaction(engine, self._on_open, write=True)  # (if this fails, it can be read)
        return engine

    def _empty_store(self) -> sa.Engine:
        if self._empty is None:
            self._empty = _sqlite_engine(
                lambda: sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            )
            _transaction(self._empty, set_up, write=True)
        return self._empty


def _sqlite_engine(connect: Callable[[], sqlite3.Connection]) -> sa.Engine:
    """An engine over one connection made by `connect` (in autocommit mode: each transaction
    is begun here, a write with BEGIN IMMEDIATE so that it holds the write lock from its first
    read on, and two processes setting up one new store agree)."""
    engine = sa.create_engine("sqlite://", creator=connect, poolclass=StaticPool)

    @sa.event.listens_for(engine, "begin")
    def begin(conn: sa.Connection) -> None:
        writes = conn.get_execution_options().get("lora_lab_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")

    return engine


def _transaction(engine: sa.Engine, work: Callable[[sa.Connection], T], write: bool) -> T:
    with engine.connect() as conn:
        conn.execution_options(lora_lab_write=write)
        with conn.begin():
            return work(conn)


def _connect(path: Path) -> sqlite3.Connection:
    """A connection to the file for reading and writing, in autocommit mode (transactions are
    begun explicitly: _sqlite_engine)."""
    db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")  # a commit survives a power cut too
    db.execute("PRAGMA foreign_keys=ON")  # a deleted run's metrics and snapshots go with it
    return db


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """Read a store that cannot be written. A WAL database in a read-only folder cannot even
    make its shared-memory file: then it is read as immutable, as it is on disk."""
    for mode in ("mode=ro", "mode=ro&immutable=1"):
        db = _connect_uri(path, mode)
        try:
            db.execute("SELECT COUNT(*) FROM runs").fetchone()
            return db
        except sqlite3.DatabaseError as error:
            db.close()
            why = str(error)
    raise StoreError(unusable(str(path), why, SQLITE_ADVICE))


def _connect_uri(path: Path, mode: str) -> sqlite3.Connection:
    uri = f"{path.resolve().as_uri()}?{mode}"
    return sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False, isolation_level=None)


def _identity(path: Path) -> tuple[int, int] | None:
    """Which file is at `path` now (device, inode), or None if there is none. A path that
    cannot even be looked at (a symbolic link that leads back to itself) is a StoreError
    saying so: it is not a store that does not exist yet."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise StoreError(unusable(str(path), paths.why(error, path), SQLITE_ADVICE)) from None
    return status.st_dev, status.st_ino


def _check_is_ours(path: Path) -> None:
    """Raise StoreError unless `path` is missing, empty, or a LoRA Lab database in good order.

    The file is only ever read here. A first look opens it as immutable (no lock files, no
    side effects at all); as that look can catch a writer mid-checkpoint, a problem it finds
    is confirmed by a second, ordinary read-only look before it is reported.
    """
    if not path.exists():
        return
    if not path.is_file():  # a folder, or a pipe or device that a read could hang on
        raise StoreError(unusable(str(path), "it is not a file", SQLITE_ADVICE))
    if path.stat().st_size == 0:
        return
    with open(path, "rb") as file:
        if file.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            raise StoreError(unusable(str(path), "it is not an SQLite database", SQLITE_ADVICE))
    if _file_problem(path, "mode=ro&immutable=1") and (found := _file_problem(path, "mode=ro")):
        raise StoreError(unusable(str(path), found, SQLITE_ADVICE))


def _file_problem(path: Path, mode: str) -> str | None:
    """What is wrong with the SQLite file at `path` (problem(), or damage), or None."""
    engine = _sqlite_engine(lambda: _connect_uri(path, mode))
    try:
        return _transaction(engine, _problem_or_damage, write=False)
    except sa.exc.DBAPIError as error:
        return one_line(error)
    finally:
        engine.dispose()


def _problem_or_damage(conn: sa.Connection) -> str | None:
    if found := problem(conn):
        return found
    # Damage deeper in the file would otherwise surface later, in the middle of a query.
    verdict = conn.exec_driver_sql("PRAGMA quick_check").scalar()
    return None if verdict == "ok" else f"it is damaged: {verdict}"


# -- PostgreSQL ------------------------------------------------------------------------------------
class PostgresDatabase:
    """A PostgreSQL database, shared by every app server and worker that names it.

    It is connected to at once, so an unreachable server, a wrong password or a database that
    is not LoRA Lab's is one line naming LORA_LAB_DB when the app or a command starts.
    Afterwards each use checks its connection first (pool_pre_ping) and reconnects; a statement
    whose connection is lost under it is tried once more on a new one; while the server cannot
    be reached, each use is a StoreError that says so, and what was committed stays committed.
    """

    path: Path | None = None
    weights_dir: Path | None = None  # weights live in the `weights` table
    read_only: str | None = None  # (a role that may only read gets a StoreError per write)

    def __init__(self, url: sa.URL, on_open: Callable[[sa.Connection], Any]) -> None:
        self.where = url.render_as_string(hide_password=True)
        try:
            self._engine = sa.create_engine(
                url,
                pool_pre_ping=True,
                connect_args={"connect_timeout": CONNECT_TIMEOUT_S, "application_name": APP_ID},
            )
        except ImportError:  # psycopg is an optional dependency
            raise StoreError(
                f"{SETTING} names a PostgreSQL database, which needs psycopg: "
                "pip install -r requirements-distributed.txt"
            ) from None
        try:
            with self._engine.begin() as conn:
                found = problem(conn)
                if found:
                    raise StoreError(unusable(self.where, found, POSTGRES_ADVICE))
                set_up(conn)
        except sa.exc.DBAPIError as error:
            self._engine.dispose()
            raise StoreError(
                f"cannot use the run database at {self.where}, set by {SETTING} "
                f"({one_line(error)}): check that the server runs and that {SETTING} names its "
                "host, port, database, user and password"
            ) from None
        except StoreError:
            self._engine.dispose()
            raise
        with contextlib.suppress(StoreError):
            self.run(on_open, "mark interrupted runs")  # (a role that may only read cannot)

    def run(self, work: Callable[[sa.Connection], T], what: str | None = None) -> T:
        """`work(conn)` in one transaction (a write if `what` says what it writes). If the
        connection is lost before the commit is sent, nothing was written: it is run once more
        on a new connection. A commit whose answer is lost is not repeated (it may have
        happened); nor is a run that fails twice: StoreError, one line."""
        for last_try in (False, True):  # (each try returns or raises on the last)
            committing = False
            try:
                with self._engine.connect() as conn, conn.begin():
                    result = work(conn)
                    committing = True  # leaving the block commits
                return result
            except sa.exc.DBAPIError as error:
                why = one_line(error)
                if not _disconnected(error):
                    if what is None:
                        raise StoreError(
                            f"cannot read the run database at {self.where} ({why})"
                        ) from None
                    raise StoreError(not_written(what, self.where, why)) from None
                if last_try or committing:
                    raise Unreachable(self.where, why) from None

    def writable(self) -> bool:
        return True

    def identity(self) -> str:
        return self.where

    def opened(self) -> str:
        return self.where

    def files(self) -> list[Path]:
        return []

    def close(self) -> None:
        self._engine.dispose()


def _disconnected(error: sa.exc.DBAPIError) -> bool:
    """Whether `error` is the connection's, not the statement's: lost, refused, or the server
    shutting down or starting up (SQLSTATE 08…, 57P01–57P03)."""
    if error.connection_invalidated:
        return True
    state = getattr(error.orig, "sqlstate", None)
    if state is None:  # no answer from a server at all
        return isinstance(error, sa.exc.OperationalError)
    return state.startswith("08") or state in ("57P01", "57P02", "57P03")


Database = SqliteDatabase | PostgresDatabase
