"""The run store as its tests (and the adapters' and the hostile inputs') use it: a run small
enough to train in a test, what a model computes (to compare a model with its copy), SQL on the
store's database from outside, and an adapter zip built by hand."""

from __future__ import annotations

import dataclasses
import io
import os
import zipfile

import sqlalchemy as sa
import torch

from core.common.config import RunConfig
from core.store import rundb
from core.store.records import RunRecord
from core.store.runs import RunStore
from core.training import text

# A few steps on the default model and dataset: enough to move every number.
SMALL = {"steps": 6, "eval_interval": 3, "snapshot_interval": 3}


def outputs(model: torch.nn.Module) -> torch.Tensor:
    """The model's outputs on five fixed images: equal for a model and its saved copy."""
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.eval()(x)


def text_outputs(model: torch.nn.Module) -> torch.Tensor:
    """A text model's logits for a fixed passage (one row per position and character): equal
    for a model and its saved copy."""
    with torch.no_grad():
        return model.eval()(text.encode("def spectrum(self):\n    return the ").unsqueeze(0))


def record(id: int = 1, status: str = "finished", owner: str = "ann", **fields) -> RunRecord:
    """A stored run as the store returns it, made up without a store: `fields` its results
    (test_acc_after=0.9, trainable_params=4000, …) or settings (config=RunConfig(rank=8))."""
    made = {field.name: None for field in dataclasses.fields(RunRecord) if field.init}
    made |= {"id": id, "name": f"run {id}", "owner": owner, "config": RunConfig()}
    made |= {"created": 0.0, "torch_threads": 1, "has_weights": True, "status": status}
    made |= {"reason": "", "folder": "", "history": [], "snapshots": []}
    return RunRecord(**(made | fields))


def outside(store: RunStore, statement: str, **values: object) -> list[tuple]:
    """Run `statement` on the store's database as another program would (its own connection,
    around the store), and return the rows it gives."""
    if store.path is not None:
        url = sa.URL.create("sqlite", database=str(store.path))
    else:
        url = rundb.postgres_url(os.environ["LORA_LAB_DB"])
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(statement), values)
            return result.all() if result.returns_rows else []
    finally:
        engine.dispose()


def zipped(files: dict[str, bytes]) -> bytes:
    """A zip of `files` ({name: content}), as an upload of an adapter."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()
