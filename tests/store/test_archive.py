"""A class archived under its name: the runs keep everything, a later archive moves them, a
deleted run leaves its archive entry, and a name is checked as every name is."""

import pytest

from core.common.config import RunConfig, SettingError


def test_runs_are_archived_under_a_class_name(store):
    first, second, third = (store.create(RunConfig(seed=seed), owner="ann") for seed in (1, 2, 3))
    assert store.archived() == {}
    assert store.archive([first, second, 10**6], "  Monday\tgroup B ") == "Monday group B"
    assert store.archived() == {first: "Monday group B", second: "Monday group B"}
    store.archive([second], "Tuesday")  # archived again: moved, not copied
    assert store.archived() == {first: "Monday group B", second: "Tuesday"}
    store.fail(first, "diverged")  # (a run still training cannot be deleted)
    store.delete(first)
    assert store.archived() == {second: "Tuesday"}
    assert {record.id for record in store.list()} == {second, third}  # nothing else changed


@pytest.mark.parametrize("name", ["", "   ", "a\x1b[2Jb", "x" * 61])
def test_a_class_name_that_cannot_be_kept_archives_nothing(store, name):
    run_id = store.create(RunConfig())
    with pytest.raises(SettingError):
        store.archive([run_id], name)
    assert store.archived() == {}
