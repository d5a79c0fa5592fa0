"""core.analyses.reports: a saved run through the analyses (checked against numpy), and the text
tables."""

import numpy as np
import pytest
import torch

from core.analyses import reports
from core.common.config import RunConfig
from core.lowrank.lora import adapted_layers
from core.training.rebuild import rebuild
from core.training.record import train_and_save


def test_analyse_run_reports_the_saved_planted_run(store, one_thread):
    params = {"layer": "fc2", "rank": 2}
    config = RunConfig(shift="planted-rank", shift_params=params, rank=2, steps=5)
    run_id, result = train_and_save(config, store)
    report = reports.analyse_run(run_id, store)

    assert set(report) == {"fc1", "fc2"}
    with torch.no_grad():
        delta_W = adapted_layers(result.model)["fc2"].delta_W().double().numpy()
    np.testing.assert_allclose(
        report["fc2"].sigma_delta_W, np.linalg.svd(delta_W, compute_uv=False)[:2], rtol=1e-5
    )
    planted = report["fc2"].planted
    np.testing.assert_allclose(
        planted.sigma_planted[:2],
        np.linalg.svd(result.task.planted.delta_W.double().numpy(), compute_uv=False)[:2],
    )
    assert planted.planted_rank == 2 and report["fc1"].planted is None
    # the command line's JSON: "planted" only where there is a planted update
    assert "planted" not in report["fc1"].to_dict()
    assert report["fc2"].to_dict()["planted"]["planted_rank"] == 2
    assert torch.equal(reports.planted_of(config).delta_W, result.task.planted.delta_W)
    assert reports.planted_of(RunConfig(shift="rotate")) is None

    table = reports.report_table(report).splitlines()
    titles = ["layer", "d×k", *reports.REPORT_COLUMNS.values()]
    assert [title in table[0] for title in titles] == [True] * len(titles)
    assert [line.split()[0] for line in table[1:]] == ["fc1", "fc2"]
    assert table[2].split()[1] == "×".join(map(str, report["fc2"].shape))


def test_planted_report_names_the_layer_a_run_did_not_train(store, one_thread):
    planted_in_fc2 = {"shift": "planted-rank", "shift_params": {"layer": "fc2"}}
    config = RunConfig(**planted_in_fc2, targets=["fc1"], steps=2)
    run_id, _ = train_and_save(config, store)
    base_model, model = rebuild(store.read_weights(run_id))
    with pytest.raises(ValueError, match="'fc2', which this run did not train"):
        reports.planted_report(base_model, model, reports.planted_of(config))


def test_format_table_aligns_numbers_right_and_text_left():
    rows = [
        {"method": "lora", "rank": 8, "trainable": 12345, "after": 0.91234, "status": "finished"},
        {"method": "full", "rank": None, "trainable": 7, "after": None, "status": "failed nan"},
    ]
    lines = reports.format_table(rows, {"trainable": ",", "after": ".3f"}).splitlines()
    assert lines == [
        "method  rank  trainable  after  status",
        "lora       8     12,345  0.912  finished",
        "full       —          7      —  failed nan",
    ]


def test_format_table_defaults_floats_to_three_digits_and_other_values_to_str():
    rows = [{"x": 1234.5678, "seeds": [1, 2], "ok": True}, {"x": 1e-5, "seeds": [], "ok": False}]
    lines = reports.format_table(rows).splitlines()
    assert lines == [
        "       x  seeds   ok",
        "1.23e+03  [1, 2]  True",
        "   1e-05  []      False",
    ]
    assert reports.format_table([]) == "(nothing to show)"


HISTORY = [
    {"step": 0, "train_loss": None, "val_loss": 2.3, "val_acc": 0.1},
    *(
        {"step": s, "train_loss": 2.0 - s / 10, "val_loss": None, "val_acc": None}
        for s in range(1, 9)
    ),
]
HISTORY[4] |= {"val_loss": 1.5, "val_acc": 0.6}  # an evaluation at step 4
SNAPSHOTS = [{"step": s, "layers": {}} for s in (3, 6, 8)]


@pytest.mark.parametrize(
    "clicked, step, index, eval_step",
    [
        (0, 3, 0, 0),  # before the first snapshot: the first one, and the eval at step 0
        (4.4, 3, 0, 0),  # nearer to 3 than to 6: the eval at step 4 came after it
        (4.5, 3, 0, 0),  # a tie: the earlier snapshot
        (5, 6, 1, 4),
        (8, 8, 2, 4),
        (100, 8, 2, 4),
    ],
)
def test_moment_opens_the_nearest_snapshot_and_the_metrics_logged_by_then(
    clicked, step, index, eval_step
):
    moment = reports.moment(HISTORY, SNAPSHOTS, clicked)
    assert (moment.step, moment.index, moment.eval_step) == (step, index, eval_step)
    assert moment.train_loss == pytest.approx(2.0 - step / 10)
    assert moment.validation == {"val_acc": HISTORY[eval_step]["val_acc"]}
    assert moment.val_loss == HISTORY[eval_step]["val_loss"]


def test_a_moment_of_a_run_without_snapshots_is_a_clear_error():
    with pytest.raises(ValueError, match="no snapshot"):
        reports.moment(HISTORY, [], 3)
