"""The PostgreSQL store (LORA_LAB_DB) where it differs from the SQLite file: a bad or unreachable
setting is one line that names it, on the command line and in the app; a database that is not
LoRA Lab's is refused and left as it was; a role that may only read can read, and each write is
one line; weights live in the database, where any process reads them; a server restarted under
an open store loses nothing, and the store says so meanwhile. What both back ends share (runs
in and out, deletion, repair, reading a run as it trains) is in test_runs.py, run on both.

Tests that need a server take `postgres_db` (conftest: skipped without one on a developer's
machine, failed in CI); the setting's own checks need none.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
import torch
from sqlalchemy.pool import NullPool
from streamlit.testing.v1 import AppTest

from core.__main__ import main
from core.common.config import RunConfig, for_model
from core.jobs import pool as jobs
from core.store import rundb
from core.store.runs import RunStore, StoreError
from core.training.rebuild import rebuild
from core.training.record import train_and_save
from tests.support.app_session import APP, shown
from tests.support.pool_checks import curve
from tests.support.postgres import POSTGRES_DIR, needs_postgres
from tests.support.store import SMALL, outputs, text_outputs

REPO = Path(__file__).resolve().parents[2]
SECRET = "s3cret-Pa55"  # a password that must never be shown

pytestmark = pytest.mark.usefixtures("one_thread", "home")


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (it was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_one_line_naming_the_setting(message: str, says: str) -> None:
    assert "\n" not in message and says in message, message
    assert rundb.SETTING in message and SECRET not in message, message


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    status = main(list(argv))
    return status, capsys.readouterr().err


# -- the setting, with no server needed ------------------------------------------------------------
BAD_SETTINGS = [
    pytest.param(f"mysql://lab:{SECRET}@127.0.0.1/lab", "begins with mysql://", id="mysql"),
    pytest.param("sqlite:////tmp/runs.db", "must be a postgresql:// URL", id="sqlite-url"),
    pytest.param(
        f"postgresql+asyncpg://lab:{SECRET}@127.0.0.1/lab", "must be a postgresql://", id="asyncpg"
    ),
    pytest.param(f"lab:{SECRET}@127.0.0.1/lab", "it is not a URL", id="no-scheme"),
    pytest.param(f"postgresql://lab:{SECRET}@127.0.0.1:5432", "must name a database", id="no-db"),
    pytest.param(
        f"postgresql://lab:{SECRET}@127.0.0.1:port/lab", "is not a valid URL", id="bad-port"
    ),
    pytest.param(
        f"postgresql://lab:{SECRET}@127.0.0.1:{closed_port()}/lab",
        "Connection refused",
        id="closed-port",
    ),
]


@pytest.mark.parametrize(("setting", "says"), BAD_SETTINGS)
def test_a_bad_or_unreachable_setting_is_one_line_that_names_it(
    monkeypatch, capsys, home, setting, says
):
    monkeypatch.setenv(rundb.SETTING, setting)
    with pytest.raises(StoreError) as error:
        RunStore()
    assert_one_line_naming_the_setting(str(error.value), says)
    for argv in (["runs", "list"], ["train", "--steps", "2"]):
        status, err = run_cli(capsys, *argv)
        assert status == 2 and err.startswith("error: ") and err.count("\n") == 1
        assert_one_line_naming_the_setting(err.rstrip("\n"), says)
    assert not (home / "runs.db").exists()  # no quiet fall-back to the SQLite file


def test_the_app_shows_an_unreachable_setting_instead_of_its_pages(monkeypatch):
    url = f"postgresql://lab:{SECRET}@127.0.0.1:{closed_port()}/lab"
    monkeypatch.setenv(rundb.SETTING, url)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, at.exception
    [error] = at.error
    assert_one_line_naming_the_setting(shown(error.value), "Connection refused")


def test_without_psycopg_the_setting_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if it were not installed
    monkeypatch.setenv(rundb.SETTING, f"postgresql://lab:{SECRET}@127.0.0.1/lab")
    with pytest.raises(StoreError) as error:
        RunStore()
    assert_one_line_naming_the_setting(str(error.value), "requirements-distributed.txt")


# -- a server: its login, and databases that are not LoRA Lab's ------------------------------------
def admin_run(url: str, *statements: str) -> list[tuple]:
    """Run statements in the database at `url` as its owner; the rows of the last one."""
    engine = sa.create_engine(rundb.postgres_url(url), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            for statement in statements:
                result = conn.exec_driver_sql(statement)
            return result.all() if result.returns_rows else []
    finally:
        engine.dispose()


def contents(url: str) -> dict[str, list[tuple]]:
    """Every table of the database and its rows, in order: to see that nothing changed."""
    engine = sa.create_engine(rundb.postgres_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            tables = sorted(sa.inspect(conn).get_table_names())
            return {t: sorted(conn.exec_driver_sql(f'SELECT * FROM "{t}"').all()) for t in tables}
    finally:
        engine.dispose()


def test_a_wrong_password_or_database_is_one_line_that_names_the_setting(postgres_db, monkeypatch):
    url = sa.make_url(postgres_db)
    for bad, says in [
        (url.set(password=SECRET), "password authentication failed"),
        (url.set(database="no_such_db"), 'database "no_such_db" does not exist'),
    ]:
        monkeypatch.setenv(rundb.SETTING, bad.render_as_string(hide_password=False))
        with pytest.raises(StoreError) as error:
            RunStore()
        assert_one_line_naming_the_setting(str(error.value), says)


def lora_lab_store(version: str) -> list[str]:
    """A LoRA Lab store made by this version, then marked as another schema version."""
    with RunStore():  # (LORA_LAB_DB is the database)
        pass
    return [f"UPDATE meta SET value = '{version}' WHERE key = 'schema_version'"]


FOREIGN = {
    "another program's": (
        lambda: ["CREATE TABLE contacts (name TEXT)", "INSERT INTO contacts VALUES ('Ada')"],
        "it belongs to another program",
    ),
    "another program's meta": (
        lambda: [
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)",
            "INSERT INTO meta VALUES ('app', 'photo-album')",
        ],
        "it belongs to another program",
    ),
    "a newer LoRA Lab's": (lambda: lora_lab_store("99"), "it was made by a newer LoRA Lab"),
    "a damaged version": (lambda: lora_lab_store("x"), "its schema version is 'x'"),
}


@pytest.mark.parametrize("kind", FOREIGN)
def test_a_database_that_is_not_lora_labs_is_refused_and_left_as_it_was(
    postgres_db, monkeypatch, kind
):
    monkeypatch.setenv(rundb.SETTING, postgres_db)
    make, says = FOREIGN[kind]
    admin_run(postgres_db, *make())
    before = contents(postgres_db)
    with pytest.raises(StoreError) as error:
        RunStore()
    message = str(error.value)
    assert_one_line_naming_the_setting(message, says)
    assert "left untouched" in message and "***" in message  # the URL, without its password
    assert contents(postgres_db) == before


# -- a role that may only read ---------------------------------------------------------------------
@pytest.fixture
def reader(postgres_db) -> str:
    """The URL of the same database for a new role that may only read it."""
    role = f"reader_{os.urandom(4).hex()}"
    grants = [
        f"CREATE ROLE {role} LOGIN PASSWORD '{SECRET}'",
        f"GRANT USAGE ON SCHEMA public TO {role}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}",
    ]
    with RunStore(postgres_db) as store:  # the tables first, then a finished run in them
        train_and_save(RunConfig(**SMALL), store)
    admin_run(postgres_db, *grants)
    yield sa.make_url(postgres_db).set(username=role, password=SECRET).render_as_string(False)
    admin_run(
        postgres_db,
        f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}",
        f"REVOKE USAGE ON SCHEMA public FROM {role}",
        f"DROP ROLE {role}",
    )


def test_a_role_that_may_only_read_reads_and_each_write_is_one_line(
    postgres_db, reader, monkeypatch
):
    before = contents(postgres_db)
    monkeypatch.setenv(rundb.SETTING, reader)
    with RunStore() as store:
        [record] = store.list()
        assert store.get(record.id).status == "finished"
        rebuild(store.read_weights(record.id))
        writes = [
            (lambda: store.rename(record.id, "mine now"), f"cannot rename run {record.id}"),
            (lambda: store.delete(record.id), f"cannot delete run {record.id}"),
            (lambda: train_and_save(RunConfig(**SMALL), store), "cannot start a run"),
        ]
        for write, says in writes:
            with pytest.raises(StoreError) as error:
                write()
            message = str(error.value)
            assert "\n" not in message and says in message and "permission denied" in message
            assert "Nothing was changed in it" in message and SECRET not in message
    assert contents(postgres_db) == before


# -- weights, read by any process ------------------------------------------------------------------
READ_ELSEWHERE = """
import json, sys, torch
from core.store.runs import RunStore
from core.training.rebuild import rebuild
from tests.support.store import outputs
torch.set_num_threads(1)  # as the test's own process: the same sums, the same bits
with RunStore() as store:
    _, model = rebuild(store.read_weights(int(sys.argv[1])))
print(json.dumps(outputs(model).tolist()))
"""


def test_weights_live_in_the_database_where_any_process_reads_them(
    postgres_db, monkeypatch, home, tmp_path
):
    monkeypatch.setenv(rundb.SETTING, postgres_db)
    with RunStore() as store:
        run_id, result = train_and_save(RunConfig(**SMALL), store)
        with pytest.raises(StoreError, match="kept in the run database"):
            store.weights_path(run_id)
    assert not (home / "runs").exists() and not (home / "runs.db").exists()
    elsewhere = tmp_path / "another-machine"  # another LORA_LAB_HOME: nothing shared but the URL
    done = subprocess.run(
        [sys.executable, "-c", READ_ELSEWHERE, str(run_id)],
        cwd=REPO,
        env=os.environ | {"LORA_LAB_HOME": str(elsewhere), "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    read = torch.tensor(json.loads(done.stdout), dtype=torch.float32)
    assert torch.equal(read, outputs(result.model))


def test_a_gpt_run_keeps_its_bits_per_character_samples_and_weights_in_the_database(
    postgres_db, monkeypatch
):
    monkeypatch.setenv(rundb.SETTING, postgres_db)
    config = RunConfig.from_dict({**for_model("gpt").to_dict(), **SMALL})
    with RunStore() as store:
        run_id, result = train_and_save(config, store)
    with RunStore() as store:  # a new connection, as any other process reads it
        record = store.get(run_id)
        _, model = rebuild(store.read_weights(run_id))
    assert curve(record.history) == curve(result.history)
    assert [h["step"] for h in record.history if h["sample"]] == [0, 3, 6]
    for field in ("test_bpc_before", "test_bpc_after", "source_bpc_before", "source_bpc_after"):
        assert getattr(record, field) == getattr(result, field) is not None
    assert torch.equal(text_outputs(model), text_outputs(result.model))


# -- the connection lost, the server restarted -----------------------------------------------------
def test_connections_cut_by_the_server_are_made_again(postgres_db, monkeypatch):
    """The server ends every connection of the store (an administrator, a fail-over): the next
    call checks its connection before use and makes a new one."""
    monkeypatch.setenv(rundb.SETTING, postgres_db)
    with RunStore() as store:
        run_id = store.create(RunConfig())
        database = sa.make_url(postgres_db).database
        ended = admin_run(
            postgres_db,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE application_name = '{rundb.APP_ID}' AND datname = '{database}'",
        )
        assert ended and all(ok for (ok,) in ended)
        assert [r.id for r in store.list()] == [run_id]


def test_a_statement_whose_connection_is_lost_is_run_once_more(postgres_db):
    """The connection dies under a statement (after the check before use): it runs again on a
    new connection. It dies again: one line that says the database is not reachable."""
    with RunStore(postgres_db) as store:
        calls = []

        def dies_the_first_time(conn: sa.Connection) -> int:
            calls.append(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar())
            if len(calls) == 1:
                conn.exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid())")
            return conn.exec_driver_sql("SELECT COUNT(*) FROM runs").scalar()

        assert store._db.run(dies_the_first_time) == 0
        assert len(calls) == 2 and calls[0] != calls[1]

        def always_dies(conn: sa.Connection) -> None:
            conn.exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid())")

        with pytest.raises(StoreError, match="is not reachable") as error:
            store._db.run(always_dies, "save something")
        assert "\n" not in str(error.value) and "try again in a moment" in str(error.value)


def server(command: str) -> None:
    script = REPO / ".ci" / "postgres.sh"
    subprocess.run([script, command, needs_postgres(POSTGRES_DIR)], check=True, timeout=120)


def test_the_server_restarted_under_an_open_store_loses_nothing(postgres_db, monkeypatch):
    monkeypatch.setenv(rundb.SETTING, postgres_db)
    needs_postgres(POSTGRES_DIR)
    with RunStore() as store:
        run_id, _ = train_and_save(RunConfig(**SMALL), store, owner="alice")
        before = store.get(run_id)
        server("stop")
        try:
            for call in (store.list, lambda: store.rename(run_id, "renamed while down")):
                with pytest.raises(StoreError) as error:
                    call()
                message = str(error.value)
                assert "is not reachable" in message and "try again" in message, message
                assert "\n" not in message and "***" in message
        finally:
            server("start")
        assert store.get(run_id) == before
        second, result = train_and_save(RunConfig(**SMALL), store, owner="alice")
        assert [r.id for r in store.list(owner="alice")] == [second, run_id]
        assert store.get(second).history == result.history


def test_a_run_that_ends_while_the_server_restarts_is_saved_once_it_is_back(
    postgres_db, monkeypatch
):
    """Issue 18: the store said "retrying" and nothing retried; the run was left unfinished.
    Now the finished run waits for the server (record.SAVE_WAIT_S) and is saved."""
    monkeypatch.setenv(rundb.SETTING, postgres_db)
    needs_postgres(POSTGRES_DIR)
    finish = RunStore.finish

    def restart_first(store: RunStore, run_id: int, *saved: object) -> None:
        monkeypatch.setattr(RunStore, "finish", finish)  # the next tries: as they are
        server("stop")
        threading.Timer(3.0, server, ["start"]).start()
        finish(store, run_id, *saved)  # not reachable: raises

    monkeypatch.setattr(RunStore, "finish", restart_first)
    with RunStore() as store:
        run_id, result = train_and_save(RunConfig(**SMALL), store, owner="alice")
        saved = store.get(run_id)
    assert saved.status == "finished" and saved.history == result.history


def test_the_app_says_the_database_is_not_reachable_while_it_restarts(postgres_db, monkeypatch):
    """A page that reads the runs while the server is down shows the store's one line, not a
    traceback, and shows the runs again once it is back. (The job pool is process-wide and
    not this test's subject: it is left out.)"""
    monkeypatch.setenv(rundb.SETTING, postgres_db)
    monkeypatch.setattr(jobs, "pool", lambda: None)
    needs_postgres(POSTGRES_DIR)
    with RunStore() as store:
        train_and_save(RunConfig(**SMALL), store, owner="teacher")
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("app_pages/compare.py").run()  # (it lists runs from the store)
    assert not at.exception and not at.error, (at.exception, at.error)
    server("stop")
    try:
        at.run()
        assert not at.exception, at.exception
        [error] = at.error
        assert "is not reachable" in error.value and "try again" in error.value
    finally:
        server("start")
    at.run()
    assert not at.exception and not at.error, (at.exception, at.error)
