"""The string catalogs: every language says everything English says, with the same blanks."""

import string

import pytest

from core.classroom import lessons
from core.classroom.i18n import LANGUAGES, catalog
from core.lowrank import lora, methods
from core.training import data, zoo

ENGLISH = catalog("en")


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


@pytest.mark.parametrize("language", [lang for lang in LANGUAGES if lang != "en"])
def test_every_catalog_has_the_english_keys_and_placeholders(language):
    other = catalog(language)
    assert set(other.strings) == set(ENGLISH.strings)
    for key, text in ENGLISH.strings.items():
        assert placeholders(other.strings[key]) == placeholders(text), key


@pytest.mark.parametrize("language", list(LANGUAGES))
def test_no_string_is_empty(language):
    assert all(text.strip() for text in catalog(language).strings.values())


def test_every_choice_the_app_offers_has_words():
    keys = [key for lesson in lessons.LESSONS for key in lesson.text_keys().values()]
    keys += [f"models.{name}.{part}" for name in zoo.names() for part in ("title", "summary")]
    keys += [f"methods.{name}" for name in methods.METHODS]
    keys += [f"methods.{name}_help" for name in methods.METHODS]
    keys += [f"inits.{name}" for name in lora.INITS] + [f"scalings.{s}" for s in lora.SCALINGS]
    keys += [
        f"status.{s}"
        for s in ("queued", "running", "finished", "stopped", "failed", "unfinished", "imported")
    ]
    keys += [f"shifts.{name}.title" for name in data.SHIFTS]
    keys += [f"shifts.{name}.explanation" for name in data.SHIFTS]
    keys += [f"datasets.{name}.title" for name in data.DATASETS]
    missing = [key for key in keys if not ENGLISH.has(key)]
    assert not missing


def test_t_fills_placeholders_and_names_a_missing_key():
    assert ENGLISH.t("sidebar.version", version="9.9") == "LoRA Lab 9.9 · works offline"
    with pytest.raises(KeyError, match="no string 'nope'"):
        ENGLISH.t("nope")


def test_unknown_language_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown language 'fr'"):
        catalog("fr")


DATASET_WORDS, SHIFT_WORDS = ("title", "description"), ("title", "explanation")


@pytest.mark.parametrize("language", list(LANGUAGES))
def test_every_dataset_and_shift_has_words_in_every_language(language):
    """core.training.data holds no sentence for students: each dataset and shift is titled and
    explained in the catalogs only, in every language."""
    words = catalog(language)
    keys = [f"datasets.{name}.{part}" for name in data.DATASETS for part in DATASET_WORDS]
    keys += [f"shifts.{name}.{part}" for name in data.SHIFTS for part in SHIFT_WORDS]
    missing = [key for key in keys if not words.has(key) or not words.t(key).strip()]
    assert not missing


def test_every_shift_parameter_and_pretraining_task_has_words():
    names = {name for shift in data.SHIFTS.values() for name in shift.params}
    missing = [name for name in names if not ENGLISH.has(f"shift_params.{name}")]
    assert not missing
    built_in = [name for name in zoo.names() if zoo.card(name)["test_acc"] is not None]
    assert all(ENGLISH.has(f"models.{name}.source") for name in built_in)


@pytest.mark.parametrize("language", list(LANGUAGES))
def test_a_status_the_app_has_no_word_for_is_shown_as_stored(language):
    """A row set to 'paused' by hand (the command line lists it) must not fail a page."""
    words = catalog(language)
    assert words.status("finished") == words.t("status.finished")
    assert words.status("paused") == "paused"
    assert words.status("finished.x") == "finished.x"
