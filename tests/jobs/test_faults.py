"""Faults, tried and counted, for two students (tests/support/faults.py plays them;
bench/faults.py plays a class of 20, and also kills a Ray worker node, which takes Ray tens of
seconds to notice): two app servers, the test PostgreSQL server and the test Ray cluster; while
the class trains, the queue's actor is killed, then an app server, then PostgreSQL restarts,
then every student asks for more runs than their cap. No job is lost or run twice, and every
student's page shows how each of their jobs ended."""

from __future__ import annotations

from tests.support.faults import ACTOR, CAP, POSTGRES, SERVER, playing
from tests.support.postgres import POSTGRES_DIR, needs_postgres

STUDENTS = 2


def test_no_job_is_lost_or_run_twice_when_a_piece_of_the_class_dies(
    ray_cluster, postgres_db, tmp_path
):
    settings = {"students": STUDENTS, "database": postgres_db, "address": ray_cluster}
    settings |= {"postgres_dir": needs_postgres(POSTGRES_DIR), "logs": tmp_path, "cap": 2}
    with playing(**settings) as room:
        tallies = {fault: room.play(fault) for fault in (ACTOR, SERVER, POSTGRES, CAP)}
    for tally in tallies.values():
        assert (tally.lost, tally.run_twice, tally.pages_showed) == (0, 0, True), tally
        assert tally.submitted == tally.finished + tally.failed, tally
    assert tallies[SERVER].finished == tallies[POSTGRES].finished == STUDENTS
    assert (tallies[CAP].submitted, tallies[CAP].refused) == (2 * STUDENTS, STUDENTS)
    assert tallies[CAP].finished == 2 * STUDENTS
