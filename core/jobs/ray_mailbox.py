"""The mailbox between a Ray executor and its jobs: one small Ray actor per executor.

A job's task posts its training events here in batches and reads, in each reply, whether it was
asked to stop; the executor's thread takes the events out and passes them to the scheduler, and
asks a job to stop by putting its id here. It holds plain values only (tuples, dicts, strings)
and imports nothing: the actor's process needs neither torch nor the rest of LoRA Lab, so it
starts in about a second and stays small. (core.jobs.ray_jobs wraps it with `ray.remote`.)
"""

from __future__ import annotations

from typing import Any

Posted = tuple[str, str, int, dict[str, Any]]  # (job id, event kind, step, event data)


class Mailbox:
    """Events on their way from jobs to the executor, and the jobs asked to stop."""

    def __init__(self) -> None:
        self._events: list[Posted] = []
        self._nodes: dict[str, str] = {}  # job id → the Ray node it runs on
        self._stopping: set[str] = set()

    def hello(self, job_id: str, node_id: str) -> None:
        """A job began on `node_id` (where its run is marked if its worker dies)."""
        self._nodes[job_id] = node_id

    def post(self, job_id: str, events: list[tuple[str, int, dict[str, Any]]]) -> bool:
        """A job's events since its last post, in order; whether it should stop."""
        self._events.extend((job_id, *event) for event in events)
        return job_id in self._stopping

    def take(self) -> tuple[list[Posted], dict[str, str]]:
        """Every event posted since the last take, in order, and the nodes jobs began on."""
        events, nodes = self._events, self._nodes
        self._events, self._nodes = [], {}
        return events, nodes

    def stop(self, job_id: str) -> None:
        self._stopping.add(job_id)

    def forget(self, job_id: str) -> None:
        """The job is over: its stop request goes."""
        self._stopping.discard(job_id)
