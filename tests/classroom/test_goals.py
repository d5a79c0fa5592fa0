"""An exercise's goal: parsed from a link with one clear line for anything else, checked
against a run's stored results, and the runs that meet it ranked."""

import pytest

from core.classroom.goals import parse_goal, ranked
from tests.support.store import record as run


def test_a_goal_is_read_as_written():
    goal = parse_goal(" acc >= 0.9, params<=5000 ")
    assert goal.text == "acc>=0.9,params<=5000"
    assert [(c.measure, c.op, c.bound) for c in goal.conditions] == [
        ("acc", ">=", 0.9),
        ("params", "<=", 5000),
    ]


@pytest.mark.parametrize(
    "text, says",
    [
        ("", "1 to 4 conditions"),
        ("acc>=0.9,acc>=0.9,acc>=0.9,acc>=0.9,acc>=0.9", "1 to 4 conditions"),
        ("acc>0.9", "not a condition of a goal: 'acc>0.9'"),
        ("speed>=3", "measures: acc, bpc, params, forget"),
        ("acc>=90", "acc is a share between 0 and 1"),
        ("params<=-5", "not a condition"),
        ("acc>=0.9;drop table", "not a condition"),
        ("acc>=" + "9" * 400, "a share"),
    ],
)
def test_anything_else_is_one_clear_line(text, says):
    with pytest.raises(ValueError, match=r"^[^\n]*$") as error:
        parse_goal(text)
    assert says in str(error.value)


def test_a_run_meets_a_goal_only_when_every_condition_holds():
    goal = parse_goal("acc>=0.9,params<=5000")
    assert goal.check(run(test_acc_after=0.93, trainable_params=4000)).met is True
    assert goal.check(run(test_acc_after=0.93, trainable_params=6000)).conditions == (True, False)
    assert goal.check(run(test_acc_after=0.89, trainable_params=100)).met is False
    assert goal.check(run(test_acc_after=None, trainable_params=100)).met is None  # not measured
    failed = run(status="failed", test_acc_after=0.99, trainable_params=10)
    assert goal.check(failed).met is False


def test_forgetting_is_what_the_source_task_lost():
    goal = parse_goal("forget<=0.1")
    assert goal.check(run(source_acc_before=0.95, source_acc_after=0.86)).met is True
    assert goal.check(run(source_acc_before=0.95, source_acc_after=0.84)).met is False
    bits = parse_goal("forget<=0.5")  # a text run: bits per character gained on the source
    assert bits.check(run(source_bpc_before=2.0, source_bpc_after=2.4)).met is True
    assert bits.check(run(source_bpc_before=2.0, source_bpc_after=2.6)).met is False


def test_the_runs_that_meet_a_goal_are_ranked_best_first():
    goal = parse_goal("acc>=0.8")
    runs = [
        run(1, test_acc_after=0.85, trainable_params=100),
        run(2, test_acc_after=0.95, trainable_params=9000),
        run(3, test_acc_after=0.70, trainable_params=10),
        run(4, test_acc_after=0.95, trainable_params=500),
        run(5, status="failed", test_acc_after=0.99, trainable_params=5),
    ]
    assert [r.id for r in ranked(goal, runs)] == [4, 2, 1]  # a tie: fewer parameters first
