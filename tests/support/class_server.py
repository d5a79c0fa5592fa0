"""An app server as the fault plays see it (tests/support/faults.py): a process whose pool is the
one a LoRA Lab server has ($LORA_LAB_RAY: its view of the class's queue), driven by JSON lines on
stdin, as its students' pages drive a real one, and answering on stdout.

    ["submit", owner, seed, steps]   → {"id": job id} or {"refused": the page's one line}
    ["show", owner]                  → {"jobs": [[id, status, reason, run_id, done], …]}: what
                                       the owner's page shows of their jobs (it reads the pool
                                       as a page does, so the server keeps up while it is asked)

    python -m tests.support.class_server
"""

from __future__ import annotations

import json
import os
import sys

from core.common.config import RunConfig
from core.jobs import pool as jobs
from core.store.runs import StoreError


def answer(command: list) -> dict:
    if command[0] == "submit":
        _, owner, seed, steps = command
        config = RunConfig(seed=seed, steps=steps, eval_interval=steps, snapshot_interval=steps)
        try:
            return {"id": jobs.submit(config, owner).id}
        except (ValueError, StoreError) as error:
            return {"refused": str(error)}
    shown = jobs.pool().jobs(command[1])
    return {"jobs": [[j.id, j.status, j.reason, j.run_id, j.done] for j in shown]}


def main() -> None:
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # what Ray prints goes to the log
    jobs.pool()  # joins the class's queue before the first student comes
    print(json.dumps({"ready": True}), file=answers, flush=True)
    for line in sys.stdin:
        print(json.dumps(answer(json.loads(line))), file=answers, flush=True)


if __name__ == "__main__":
    main()
