"""A training run as a page shows it while it trains: its curves, kept up to date event by event.

Why this exists: a class of thirty students watches thirty runs at once, and every watching page
polls its run about once a second. Rebuilding each curve from the run's whole history at every
poll makes the server's work grow with history × watchers × polls, and a 2-core laptop falls
over at ten students. Here a poll costs what is new since the last one (next to nothing when
nothing is), every page watching the same run shares one copy, and a long curve is thinned to
at most MAX_POINTS points before it goes to the browser.

    frame = watch(job, job.events)      # the run's shared picture, caught up with its events
    frame.version                       # how many events it includes: new only when events are
    (frame.run, frame.version)          # a key for what is drawn from it (figures)

A stored run (a reload, a server restart) becomes the same picture with `from_record`, and
`RunView` is what the Train page shows of either: a job of this server's pool, or a stored run.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

from core.classroom import train_form
from core.classroom.i18n import Catalog
from core.common.config import RunConfig
from core.jobs.scheduler import Job
from core.lowrank import spectrum
from core.store.records import RunRecord
from core.training.kinds import DataKind, Metric
from core.training.train import Event

MAX_POINTS = 300  # per curve sent to the browser; plotly draws more, the eye sees no more
KEEP_RUNS = 256  # runs whose curves stay in memory (the newest watched); others are rebuilt
# Seconds between two polls of a watching page. Each poll costs the server a few ms and the
# browser ~50 ms plus ~25 ms per chart redrawn (measured on the 2-core bench machine, where the
# class's browsers share the cores with the training). Running: twice a second, the live feel
# of a click (the default run takes 1-2 s; only as many pages as the pool has workers poll this
# fast). Queued: slowly, only its place in the queue changes, and most of a class waits there.
POLL_RUNNING = 0.5
POLL_QUEUED = 3.0
STOPPED_AT = re.compile(
    r"stopped at step (\d+) of (\d+)"
)  # core.training.train's reason for a Stop


def thin_stride(count: int, limit: int = MAX_POINTS) -> int:
    """The smallest power of two `stride` that keeps every stride-th of `count` points within
    `limit` (plus the last point). Powers of two make a growing curve thin in place: the points
    drawn at stride 2s are a subset of those drawn at s, so a curve never jumps as it grows."""
    stride = 1
    while -(-count // stride) > limit:  # ceil(count / stride)
        stride *= 2
    return stride


def thin(xs: Sequence, ys: Sequence, limit: int = MAX_POINTS) -> tuple[list, list]:
    """Points 0, s, 2s, … and the last one (s = thin_stride): exact values, none averaged."""
    stride = thin_stride(len(xs), limit)
    keep = list(range(0, len(xs), stride))
    if xs and keep[-1] != len(xs) - 1:
        keep.append(len(xs) - 1)
    return [xs[i] for i in keep], [ys[i] for i in keep]


def is_curve(name: str) -> bool:
    """Whether a history key is a curve to draw: a number measured during training or on the
    validation split (train_loss, val_loss, a metric's validation key), not the step or time."""
    return name.startswith(("train_", "val_"))


@dataclass
class Curve:
    """One line of a chart, thinned as it grows: the same points as `thin` over every point
    ever appended, at a cost per append that does not grow with the curve."""

    limit: int = MAX_POINTS
    count: int = 0  # points appended so far
    stride: int = 1
    kept_x: list = field(default_factory=list)  # points 0, stride, 2·stride, …
    kept_y: list = field(default_factory=list)
    last: tuple | None = None  # the newest point, always drawn

    def append(self, x: float, y: float) -> None:
        if self.count % self.stride == 0:
            self.kept_x.append(x)
            self.kept_y.append(y)
            if len(self.kept_x) > self.limit:  # every other kept point: stride doubles
                self.stride *= 2
                del self.kept_x[1::2], self.kept_y[1::2]
        self.count += 1
        self.last = (x, y)

    def points(self) -> tuple[tuple, tuple]:
        """(xs, ys) to draw."""
        xs, ys = tuple(self.kept_x), tuple(self.kept_y)
        if self.last is not None and (self.count - 1) % self.stride != 0:
            xs, ys = (*xs, self.last[0]), (*ys, self.last[1])
        return xs, ys


@dataclass(frozen=True)
class Frame:
    """What a page draws of a run at one moment. Immutable: many pages read it at once."""

    run: int  # its LiveRun, unique in this process: (run, version) names one picture
    version: int  # events included; the same version of a run is the same picture
    planned: int | None  # steps the run will take (None before its "start" event)
    step: int | None  # the newest recorded step (None before the first)
    steps_per_s: float
    curves: dict[str, tuple[tuple, tuple]]  # history key (train_loss, val_acc…) → (steps, values)
    sigma_step: int | None  # the newest spectrum snapshot's step
    sigma: dict[str, list[float]]  # layer → top singular values of its ΔW at sigma_step
    sigma_shape: dict[str, list[int] | None]  # layer → its ΔW's shape (None: not recorded)
    sample_step: int | None = None  # a text run's newest sample: the step it was written at
    sample: str | None = None  # … and what the model wrote from its prompt then
    base_sample: str | None = None  # … and what the base model wrote, at step 0

    @property
    def has_points(self) -> bool:
        return self.step is not None

    def curve(self, name: str) -> tuple[tuple, tuple]:
        """The thinned curve of a history key ("train_loss", a metric's validation key); empty
        where the run has none yet (or its kind measures another metric)."""
        return self.curves.get(name, ((), ()))


_serials = itertools.count(1)


class LiveRun:
    """A run's curves, caught up event by event. `add` is safe to call from many threads."""

    def __init__(self, limit: int = MAX_POINTS) -> None:
        self.serial = next(_serials)
        self._lock = threading.Lock()
        self._limit = limit
        self.seen = 0  # events read so far
        self._planned: int | None = None
        self._step: int | None = None
        self._speed = 0.0
        self._curves: dict[str, Curve] = {}  # one for each curve the history has: is_curve
        self._snapshot: dict | None = None
        self._sample: tuple[int, str] | None = None  # (step, text): a text run's newest sample
        self._base_sample: str | None = None  # its sample at step 0: the base model's
        self._frame: Frame | None = None

    def add(self, events: Sequence[Event]) -> Frame:
        """Read the events not seen yet (`events` is the run's whole list, which only grows);
        returns the picture including them. Costs nothing when no event is new."""
        with self._lock:
            for event in events[self.seen :]:
                self._read(event)
                self.seen += 1
            if self._frame is None or self._frame.version != self.seen:
                self._frame = self._picture()
            return self._frame

    @property
    def frame(self) -> Frame:
        return self.add(())

    def _read(self, event: Event) -> None:
        if event.kind == "start":
            self._planned = event.data["steps"]
        elif event.kind == "step":
            self.add_step(event.data)
        elif event.kind == "snapshot":
            self._snapshot = event.data

    def add_step(self, record: dict) -> None:
        """One history record (core.training.train's "step" event data, or a stored metrics row)."""
        step = record["step"]
        self._step, self._speed = step, record.get("steps_per_s") or 0.0
        if record.get("sample") is not None:
            self._sample = (step, record["sample"])
            if step == 0:
                self._base_sample = record["sample"]
        for name, value in record.items():
            if not is_curve(name) or value is None:
                continue
            if name not in self._curves:
                self._curves[name] = Curve(self._limit)
            self._curves[name].append(step, value)

    def _picture(self) -> Frame:
        snapshot = self._snapshot or {}
        return Frame(
            run=self.serial,
            version=self.seen,
            planned=self._planned,
            step=self._step,
            steps_per_s=self._speed,
            curves={name: curve.points() for name, curve in self._curves.items()},
            sigma_step=snapshot.get("step"),
            sigma={layer: values["sigma"] for layer, values in snapshot.get("layers", {}).items()},
            sigma_shape={
                layer: values.get("shape") for layer, values in snapshot.get("layers", {}).items()
            },
            sample_step=None if self._sample is None else self._sample[0],
            sample=None if self._sample is None else self._sample[1],
            base_sample=self._base_sample,
        )

    @classmethod
    def from_record(
        cls, history: Sequence[dict], snapshots: Sequence[dict], planned: int | None
    ) -> LiveRun:
        """A stored run's curves (core.store.runs' RunRecord.history and .snapshots, in step order):
        what a page shows after a reload or a server restart. Its frame's version is the number
        of rows read."""
        live = cls()
        live._planned = planned
        for record in history:
            live.add_step(record)
        live._snapshot = snapshots[-1] if snapshots else None
        live.seen = len(history) + len(snapshots)
        return live


def figure_specs(
    frame: Frame,
    planned: int,
    metrics: Sequence[Metric],
    words: Catalog,
    layout: Callable[..., dict],
    ticks: Callable[[list[float]], list[float]],
) -> dict[str, dict]:
    """The loss, each of `metrics` (the task's kind's: core.training.kinds.DataKind.metrics, the
    headline first) and (once there is a snapshot) σ(ΔW) figures of `frame`, as plain dicts for
    plotly (which validates each once; a figure object per new event would cost). The
    headline's figure is "metric", another's is named by its validation key ("val_acc").
    `layout(height, **more)`: the pages' figure layout; `ticks(values)`: a log axis' ticks.
    The step axis spans the `planned` steps from the first point on: a curve grows into it."""

    def steps() -> dict:
        return {
            "title": {"text": words.t("train.step")},
            "range": [-0.02 * planned, 1.02 * planned],
        }

    def scored(metric: Metric) -> dict:
        metric_x, metric_y = frame.curve(metric.validation)
        curve = _scatter(metric_x, metric_y, words.t(metric.curve), "lines+markers", "#2ca02c")
        return {
            "data": [curve],
            "layout": layout(
                300,
                showlegend=False,
                xaxis=steps(),
                yaxis={"range": list(metric.axis_range), "tickformat": metric.curve_tickformat},
            ),
        }

    (train_x, train_y), (val_x, val_y) = frame.curve("train_loss"), frame.curve("val_loss")
    loss = {
        "data": [
            _scatter(train_x, train_y, words.t("train.train_loss"), "lines"),
            _scatter(val_x, val_y, words.t("train.val_loss"), "lines+markers"),
        ],
        # a loss is never negative: no axis below 0, also when it has no point yet
        "layout": layout(300, xaxis=steps(), yaxis={"rangemode": "tozero"}),
    }
    headline, *others = metrics
    figures = {"loss": loss, "metric": scored(headline)}
    figures |= {metric.validation: scored(metric) for metric in others}
    if frame.sigma:  # σ at rounding level are left out: they would set the axis (SigmaAxis)
        resolved = {
            layer: spectrum.resolved(sigma, frame.sigma_shape.get(layer))
            for layer, sigma in frame.sigma.items()
        }
        axis = spectrum.SigmaAxis.of(resolved.values())
        figures["sigma"] = {
            "data": [
                _scatter(list(range(1, len(sigma) + 1)), sigma, layer, "lines+markers")
                for layer, sigma in resolved.items()
            ],
            "layout": layout(
                280,
                xaxis={"title": {"text": "i"}, "dtick": 1},
                yaxis={
                    "title": {"text": "σᵢ(ΔW)"},
                    "type": "log",
                    "tickvals": ticks([axis.low, axis.high]),
                    "range": axis.log_range(0.2),
                },
            ),
        }
    return figures


def _scatter(x: Sequence, y: Sequence, name: str, mode: str, color: str | None = None) -> dict:
    trace = {"type": "scatter", "x": list(x), "y": list(y), "name": name, "mode": mode}
    return trace | ({"line": {"color": color}} if color else {})


NO_RUN = LiveRun().frame  # the picture before any run: empty curves
_runs: OrderedDict[Hashable, LiveRun] = OrderedDict()
_runs_lock = threading.Lock()


def watch(key: Hashable, events: Sequence[Event]) -> Frame:
    """The shared picture of the run `key` (a core.jobs.scheduler.Job: equal only to itself),
    caught up with `events` (its whole list so far). Every page watching one run shares one
    LiveRun: a teacher's demo watched by thirty students costs the server one copy of its curves,
    updated once per new event."""
    with _runs_lock:
        live = _runs.get(key)
        if live is None:
            live = _runs[key] = LiveRun()
            while len(_runs) > KEEP_RUNS:
                _runs.popitem(last=False)
        _runs.move_to_end(key)
    return live.add(events)


@dataclass(frozen=True)
class RunView:
    """What the Train page shows of one run: live from this server's pool, or from the store
    (after a reload or a restart the pool may not know the run, the store always does)."""

    status: str  # queued | running | finished | stopped | failed | unfinished
    reason: str  # why it stopped, failed or was interrupted
    done: bool  # nothing more will come: the page stops polling
    frame: Frame
    run_id: int | None  # the stored run (a job has one once done)
    result: dict | None  # test accuracy before/after, parameters, seconds; once ended
    planned: int  # steps: from the run's start, else its config (1 if not known yet)
    config: RunConfig  # what it trains: the page names where it differs from the form's
    job: Job | None = None  # the pool's job, while the page can still stop it

    @classmethod
    def of_job(cls, job: Job) -> RunView:
        frame = watch(job, job.events)
        return cls(
            status=job.status,
            reason=job.reason,
            done=job.done,
            frame=frame,
            run_id=job.run_id,
            result=job.result,
            planned=frame.planned or job.config.steps or 1,
            config=job.config,
            job=job,
        )

    @classmethod
    def of_record(cls, record: RunRecord) -> RunView:
        """A stored run (RunStore.get: with its history). One still "running" is being trained
        by another process (a worker that outlived its server, the command line): not done."""
        planned = record.config.steps or (record.history[-1]["step"] if record.history else 0)
        summary = record.summary()
        return cls(
            status=record.status,
            reason=record.reason,
            done=record.status != "running",
            frame=LiveRun.from_record(record.history, record.snapshots, planned).frame,
            run_id=record.id,
            result=summary if record.test_acc_after is not None else None,
            planned=max(planned, 1),
            config=record.config,
        )

    @property
    def inspectable(self) -> bool:
        """Whether the run has a trained model to look into (its examples, its Spectra page)."""
        return self.run_id is not None and self.status in ("finished", "stopped")

    @property
    def kind(self) -> DataKind:
        """What the run's data is: how it is judged, its curves drawn, its examples shown."""
        return train_form.kind_of(self.config)

    @property
    def metric(self) -> Metric:
        """How the run is judged, and its curve drawn: its data's kind's headline metric."""
        return self.kind.metric

    @property
    def stopped_at(self) -> tuple[int, int] | None:
        """(step, planned steps) of a run its student stopped, read from the reason
        core.training.train gives it in English ("stopped at step 163 of 2000"), so that a page can
        say it in the student's language; None for any other reason (said as it is)."""
        found = STOPPED_AT.fullmatch(self.reason)
        return None if found is None else (int(found[1]), int(found[2]))

    def poll_seconds(self) -> float | None:
        """How long a watching page waits before it looks again; None once the run is over
        (the page stops polling). A new pace takes the page a full rerun, so it changes only
        when the run leaves the queue and when it ends. A stored run trained elsewhere: slowly,
        it is read from the store."""
        if self.done:
            return None
        if self.status == "queued" or self.job is None:
            return POLL_QUEUED
        return POLL_RUNNING


def latest(jobs: Sequence[Job], records: Sequence[RunRecord]) -> Job | RunRecord | None:
    """What the Train page shows a student who has not started a run in this session (a
    reload, a new tab, a restart): their newest job in this server's pool, else their newest
    stored run that was trained (not an imported adapter). `jobs` in submission order,
    `records` newest first, as Pool.jobs and RunStore.list give them."""
    if jobs:
        return jobs[-1]
    return next((record for record in records if record.status != "imported"), None)
