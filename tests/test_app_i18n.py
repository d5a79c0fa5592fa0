"""The string catalogs: every language says everything English says, with the same blanks."""

import string

import pytest

from core import data, lessons, lora, methods, zoo
from core.i18n import LANGUAGES, catalog

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


def test_english_words_for_shifts_and_datasets_follow_core_data():
    # core.data describes shifts and datasets in English for the command line; the app's
    # English catalog must say the same, so a change there is caught here.
    for name, shift in data.SHIFTS.items():
        assert ENGLISH.t(f"shifts.{name}.title") == shift.title
        assert ENGLISH.t(f"shifts.{name}.explanation") == shift.explanation, name
    for name, dataset in data.DATASETS.items():
        assert ENGLISH.t(f"datasets.{name}.title") == dataset.title
        assert ENGLISH.t(f"datasets.{name}.description") == dataset.description, name


def test_every_shift_parameter_and_pretraining_task_has_words():
    names = {name for shift in data.SHIFTS.values() for name in shift.params}
    missing = [name for name in names if not ENGLISH.has(f"shift_params.{name}")]
    assert not missing
    built_in = [name for name in zoo.names() if zoo.card(name)["test_acc"] is not None]
    assert all(ENGLISH.has(f"models.{name}.source") for name in built_in)
