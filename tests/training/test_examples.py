"""core.training.examples: the shifted images are the shift of the plain ones (checked with numpy),
the labels follow the renaming, and a run's examples agree with its stored accuracies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.common.config import RunConfig
from core.training import data, examples, measure, text
from core.training.train import train


def test_one_per_class_shows_every_class_before_repeating():
    labels = torch.tensor([3, 3, 1, 0, 1, 0, 2])
    assert examples.one_per_class(labels, 5) == [3, 2, 6, 0, 5]  # classes 0, 1, 2, 3, then 0


def test_inverted_images_are_255_minus_the_plain_ones():
    strip = examples.task_examples(RunConfig(shift="invert"), n=10)
    before, after = strip["before"].astype(int), strip["after"].astype(int)
    assert strip["before"].dtype == np.uint8 and before.shape == (10, 28, 28)
    assert sorted(strip["labels_before"]) == list(range(10))  # one of each digit
    assert np.abs(after - (255 - before)).max() <= 1  # rounding to the nearest level
    assert strip["labels_after"] == strip["labels_before"] and strip["renaming"] is None


def test_a_quarter_turn_is_numpys_rot90():
    strip = examples.task_examples(RunConfig(shift="rotate", shift_params={"angle": 90}), n=4)
    turned = np.rot90(strip["before"], k=1, axes=(1, 2)).astype(int)  # counter-clockwise
    assert np.abs(strip["after"].astype(int) - turned).max() <= 1


def test_shuffled_pixels_keep_each_images_pixel_values():
    strip = examples.task_examples(RunConfig(shift="permute"), n=3)
    before, after = strip["before"].reshape(3, -1), strip["after"].reshape(3, -1)
    np.testing.assert_array_equal(np.sort(before, axis=1), np.sort(after, axis=1))
    assert (before != after).any()


def test_renamed_classes_follow_the_renaming():
    strip = examples.task_examples(RunConfig(shift="label-permute", seed=3), n=10)
    renaming = strip["renaming"]
    assert sorted(renaming) == list(range(10))
    assert all(new != old for old, new in enumerate(renaming))  # every class gets a new name
    assert strip["labels_after"] == [renaming[c] for c in strip["labels_before"]]
    np.testing.assert_array_equal(strip["before"], strip["after"])
    other = examples.task_examples(RunConfig(shift="label-permute", seed=4), n=10)
    assert other["renaming"] != renaming  # the run's seed picks the renaming


def test_another_domain_shows_its_own_image_of_the_same_digit():
    strip = examples.task_examples(RunConfig(shift="domain"), n=10)
    assert strip["labels_after"] == strip["labels_before"]
    digits = data.load_task("digits", "none")
    firsts = [int(torch.nonzero(digits.y_test == c)[0]) for c in strip["labels_before"]]
    np.testing.assert_array_equal(strip["after"], examples.to_uint8(digits.x_test[firsts]))


def test_a_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown shift"):
        examples.task_examples(RunConfig(shift="mirror"))


def test_prediction_examples_agree_with_the_runs_accuracies(one_thread):
    result = train(RunConfig(steps=20))
    run = measure.TrainedRun.of_result(result)
    shown = examples.prediction_examples(run, n=8, wrong=3)
    counts = shown["counts"]
    total = counts["total"]
    groups = ("fixed", "broken", "still_wrong", "right")
    assert total == len(run.test.y) and sum(counts[name] for name in groups) == total
    assert counts["right"] + counts["broken"] == round(result.test_acc_before * total)
    assert counts["right"] + counts["fixed"] == round(result.test_acc_after * total)
    # every image wrong after training: still wrong, or broken by it
    assert counts["wrong_after"] == round((1 - result.test_acc_after) * total)
    assert counts["wrong_after"] == counts["still_wrong"] + counts["broken"]

    labels, before, after = (np.array(shown[key]) for key in ("labels", "before", "after"))
    assert len(labels) == 8 and shown["images"].shape == (8, 28, 28)
    assert (after[:3] != labels[:3]).all() and (after[3:] == labels[3:]).all()
    assert (before[3:] != labels[3:]).all()  # next come images training fixed
    np.testing.assert_array_equal(labels, run.test.y[shown["indices"]].numpy())
    np.testing.assert_array_equal(shown["images"], examples.to_uint8(run.test.x[shown["indices"]]))


@pytest.mark.parametrize("shift", ["none", "substitute", "reverse-words", "code"])
def test_a_text_tasks_preview_shows_the_same_held_out_passage_before_and_after(shift):
    """Issue 20: the same passage of held-out prose, and the shift applied to it; for "code"
    a passage of each text. A few whole lines, from the test split (never trained on)."""
    config = RunConfig(model="gpt", dataset="prose", shift=shift, seed=5)
    shown = examples.text_examples(config)
    held_out = text.decode(text.source_text().split("test")[0])
    assert shown.before in held_out and shown.before.count("\n") == text.PREVIEW_LINES - 1
    assert held_out[held_out.index(shown.before) - 1] == "\n"  # from a line's start
    if shift == "code":
        assert shown.after in text.decode(text.target_text("code", {}).split("test")[0])
        assert shown.after_caption == "examples.code_passage"
    else:
        assert shown.after == text.shifted(shown.before, shift, {"seed": 5})
    assert (shown.after == shown.before) == (shift == "none")
