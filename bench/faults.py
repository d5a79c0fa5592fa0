"""Faults, tried and counted: a class of `--students` (20) over two app servers, PostgreSQL and a
two-node Ray cluster, and while it trains, in turn: the queue's actor killed (Ray restarts it; it
rebuilds itself from the job record), an app server killed (its students reopen the page on the
other), PostgreSQL restarted, the Ray worker node killed (and a new one started), and every
student asking for one run more than their cap. Per fault it prints the jobs submitted, refused,
finished, failed or stopped with a reason, lost (must be 0), run twice (must be 0), and whether
every student's page showed how each of their jobs ended; then the reasons given.

    PGDIR=$(mktemp -d); export LORA_LAB_TEST_POSTGRES=$(.ci/postgres.sh start $PGDIR)
    export LORA_LAB_TEST_POSTGRES_DIR=$PGDIR; eval "$(bash .ci/ray.sh start)"
    .venv/bin/python -m bench.faults [--students 20] [--cap 2] [--steps 30]

It plays on a database of its own, created on that server and dropped afterwards, with the
cluster's two nodes (their logs and the servers' in a temporary folder it names). What it
counts is read from the database (tests/support/faults.py says how); tests/jobs/test_faults.py
plays the same faults, but the node's, for a few students.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from tests.support.faults import FAULTS, Tally, playing

COLUMNS = {  # Tally's field → its column in the table
    "submitted": "submitted",
    "refused": "refused at the cap",
    "finished": "finished",
    "failed": "failed, with a reason",
    "lost": "lost",
    "run_twice": "run twice",
    "pages_showed": "pages showed",
}


def show(text: str) -> None:
    print(text, flush=True)


@contextlib.contextmanager
def database(server: str) -> Iterator[str]:
    """A new database on the PostgreSQL server at `server`, dropped afterwards."""
    url = sa.make_url(server).set(drivername="postgresql+psycopg")
    name = f"lora_faults_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.dispose()


def table(tallies: list[Tally]) -> list[str]:
    """The tallies as a Markdown table (the README's)."""
    lines = [
        "| fault | " + " | ".join(COLUMNS.values()) + " | seconds |",
        "|---|" + "---:|" * (len(COLUMNS) + 1),
    ]
    for tally in tallies:
        values = dataclasses.asdict(tally)
        cells = [
            "yes" if values[c] is True else "no" if values[c] is False else str(values[c])
            for c in COLUMNS
        ]
        lines.append(f"| {tally.fault} | " + " | ".join(cells) + f" | {tally.seconds} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=20)
    parser.add_argument("--cap", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    server, folder = os.environ["LORA_LAB_TEST_POSTGRES"], os.environ["LORA_LAB_TEST_POSTGRES_DIR"]
    logs = Path(tempfile.mkdtemp(prefix="lora-faults-"))
    show(f"a class of {args.students}, cap {args.cap}, {args.steps}-step runs; logs in {logs}")
    tallies = []
    with database(server) as url:
        settings = {"students": args.students, "database": url, "postgres_dir": folder}
        settings |= {"address": os.environ["LORA_LAB_TEST_RAY"], "logs": logs}
        with playing(**settings, cap=args.cap, steps=args.steps) as room:
            for fault in FAULTS:
                tallies.append(room.play(fault))
                show(f"{fault}: {tallies[-1]}")
    show("")
    for line in table(tallies):
        show(line)
    for tally in tallies:
        for reason, count in tally.reasons.items():
            show(f"{tally.fault}: {count} × {reason}")


if __name__ == "__main__":
    main()
