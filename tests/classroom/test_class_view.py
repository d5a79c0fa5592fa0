"""The Class page's view of the class: every student with their runs and jobs, anonymous labels,
the queue, the figure's points and the goal's ranking, from made-up runs and jobs."""

from core.classroom import class_view
from core.classroom.goals import parse_goal
from core.common.config import RunConfig
from core.jobs.scheduler import Job
from tests.support.store import record


class Queue:
    """What a Job asks its pool: its place in the queue and its wait."""

    def __init__(self, places: dict[str, tuple[int, float | None]]) -> None:
        self.places = places

    def queue_position(self, job: Job) -> int:
        return self.places[job.id][0]

    def wait_estimate(self, job: Job) -> float | None:
        return self.places[job.id][1]


def job(id: str, owner: str, status: str, pool, reason: str = "", run_id=None, **config) -> Job:
    return Job(
        id=id,
        owner=owner,
        config=RunConfig(**config),
        pool=pool,
        status=status,
        reason=reason,
        run_id=run_id,
    )


def test_every_student_with_their_runs_the_queue_and_the_goals_ranking():
    pool = Queue({"q1": (1, 4.0), "q2": (2, 9.0)})
    runs = [
        record(
            3, owner="ben", test_acc_after=0.95, trainable_params=9000, config=RunConfig(rank=8)
        ),
        record(2, owner="ann", test_acc_after=0.90, trainable_params=500, config=RunConfig(rank=1)),
        record(1, owner="ann", status="failed", reason="the loss diverged"),
        record(4, owner="cleo", status="running"),
    ]
    jobs = [
        job("q1", "cleo", "queued", pool, rank=2),
        job("q2", "dan", "queued", pool),
        job("f", "dan", "failed", pool, reason="model 'resnet152' is not allowed"),
        job("f2", "dan", "failed", pool, reason="batch_size 9999 is above the limit"),
        job("r", "cleo", "running", pool, run_id=None),
        job("done", "ann", "finished", pool, run_id=2),
    ]
    view = class_view.class_view(runs, jobs, {"ann": "Ann"}, parse_goal("params<=1000"))
    students = {student.label: student for student in view.students}
    assert set(students) == {"Ann", *(class_view.anonymous(o) for o in ("ben", "cleo", "dan"))}
    ann = students["Ann"]
    assert [run.run_id for run in ann.runs] == [2, 1]
    assert ann.last_failure == "the loss diverged" and ann.best.run_id == 2
    assert ann.count("finished") == 1 and ann.count("failed") == 1
    dan = students[class_view.anonymous("dan")]
    assert [(run.status, run.position, run.wait, run.reason) for run in dan.runs] == [
        ("queued", 2, 9.0, ""),
        ("failed", None, None, "model 'resnet152' is not allowed"),
        ("failed", None, None, "batch_size 9999 is above the limit"),
    ]
    cleo = students[class_view.anonymous("cleo")]
    assert [(run.status, run.setting) for run in cleo.runs] == [
        ("queued", "lora r=2"),
        ("running", "lora r=4"),
    ]
    assert view.queue == class_view.ClassQueue(waiting=2, running=1, longest_wait=9.0)
    assert [run.run_id for _, run in view.points] == [3, 2]  # finished, scored, with a cost
    assert [run.run_id for run in view.best] == [2]  # ben's 9 000 parameters miss the goal
    assert [run.meets_goal for run in ann.runs] == [True, False]


def test_an_anonymous_label_is_short_stable_and_not_the_id():
    owner = "5f" * 16
    label = class_view.anonymous(owner)
    assert label == class_view.anonymous(owner) and len(label) == 5
    assert label[1:] not in owner and label != class_view.anonymous("6f" * 16)
