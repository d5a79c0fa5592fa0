"""Settings ↔ URL: a copied link must reopen exactly the same configuration; what a link
carries is said as text on the page, and a page's links start from the app's address."""

import io
import sqlite3
import zipfile
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlsplit

import pytest
from streamlit.testing.v1 import AppTest

from core.classroom import lessons, links
from core.classroom.i18n import catalog
from core.common.config import RunConfig, config_choices
from core.store import runs
from core.store.names import default_name
from tests.support.app_session import open_page

DEFAULTS = {
    "model": "mlp",
    "rank": 4,
    "alpha": 8.0,
    "dora": False,
    "targets": ["all-linear"],
    "shift_params": {},
}


def test_only_changed_settings_go_into_the_link():
    assert links.to_query(DEFAULTS, DEFAULTS) == {}
    changed = DEFAULTS | {"rank": 16, "dora": True}
    assert links.to_query(changed, DEFAULTS) == {"rank": "16", "dora": "true"}


def test_booleans_read_as_the_command_line_reads_them_and_old_links_still_open():
    for text, value in (("true", True), ("false", False), ("1", True), ("0", False)):
        assert links.from_query({"dora": text}, DEFAULTS) == (DEFAULTS | {"dora": value}, [])
        assert RunConfig.from_dict({"dora": text}).dora is value


def test_round_trip_of_every_kind_of_value():
    values = {
        "model": "vit",
        "rank": 2,
        "alpha": 0.001,
        "dora": True,
        "targets": ["blocks.0.attn.q", "blocks.*.attn.v"],
        "shift_params": {"angle": 30.5},
    }
    query = links.to_query(values, DEFAULTS)
    assert all(isinstance(text, str) for text in query.values())
    assert links.from_query(query, DEFAULTS) == (values, [])


def test_unreadable_values_fall_back_to_defaults_and_are_reported():
    values, unreadable = links.from_query(
        {"rank": "four", "alpha": "nan", "dora": "maybe", "shift_params": "[1]", "lang": "zh"},
        DEFAULTS,
    )
    assert values == DEFAULTS
    assert sorted(unreadable) == ["alpha", "dora", "rank", "shift_params"]


def test_a_link_rebuilds_the_same_run_config():
    config = RunConfig(
        model="cnn",
        shift="rotate",
        shift_params={"angle": 30.0},
        rank=8,
        alpha=16.0,
        scaling="rslora",
        lr=0.01,
        steps=50,
        seed=3,
    )
    defaults = RunConfig().to_dict()
    query = links.to_query(config.to_dict(), defaults)
    values, unreadable = links.from_query(query, defaults)
    assert not unreadable
    assert RunConfig.from_dict(values) == config


def test_page_choices_are_those_of_run_config():
    choices = config_choices()
    assert {key: choices[key] for key in links.TRAIN_CHOICES} == links.TRAIN_CHOICES
    assert set(links.TRAIN_CHOICES) == set(choices) & set(links.TRAIN_KEYS)
    assert "optimizer" not in links.TRAIN_CHOICES  # the Train page does not offer it
    for key in ("model", "dataset", "shift"):
        assert links.COMPARE_CHOICES[key] == choices[key]
    assert set(links.COMPARE_DEFAULTS["ranks"]) <= set(links.COMPARE_CHOICES["ranks"])
    for page, choices_of_page in (
        ("train", links.TRAIN_CHOICES),
        ("compare", links.COMPARE_CHOICES),
    ):
        defaults = PAGE_DEFAULTS[page]
        for key, allowed in choices_of_page.items():
            values = defaults[key] if isinstance(defaults[key], list) else [defaults[key]]
            assert set(values) <= set(allowed), (page, key)


def test_the_compare_sweep_is_lora_at_each_rank_on_the_given_targets_then_the_baselines():
    settings = links.COMPARE_DEFAULTS | {"model": "cnn", "shift": "permute", "ranks": [8, 2]}
    settings |= {"steps": 7, "seed": 5}
    configs = links.compare_configs(settings, ["conv1", "fc1"])
    assert [(c.method, c.rank) for c in configs[:2]] == [("lora", 2), ("lora", 8)]
    assert [c.method for c in configs[2:]] == ["head", "full"]
    for c in configs:
        assert (c.model, c.dataset, c.shift, c.steps, c.seed) == (
            "cnn",
            "mnist-5k",
            "permute",
            7,
            5,
        )
        assert c.targets == ["conv1", "fc1"]
        c.validate()
    without = links.compare_configs(settings | {"baselines": False}, "all-linear")
    assert [c.method for c in without] == ["lora", "lora"]


PAGE_DEFAULTS = {"train": links.train_defaults(), "compare": links.COMPARE_DEFAULTS}


@pytest.mark.parametrize("lesson", lessons.LESSONS, ids=lambda lesson: lesson.id)
def test_every_lesson_is_a_valid_link_to_its_page(lesson):
    defaults = PAGE_DEFAULTS[lesson.page]
    values, unreadable = links.from_query(links.encode(lesson.settings), defaults)
    assert not unreadable
    assert values == defaults | lesson.settings
    if lesson.page == "train":
        RunConfig.from_dict(values).validate()


CHOICES = {"model": ["mlp", "cnn"], "targets": ["fc1", "fc2"]}


def test_values_outside_the_choices_are_unreadable_not_replaced():
    defaults = DEFAULTS | {"targets": ["fc1"]}
    values, unreadable = links.from_query(
        {"model": "nope", "targets": "fc2,nosuch", "rank": "8"}, defaults, CHOICES
    )
    assert values == defaults | {"rank": 8}  # the page's defaults, never another choice
    assert sorted(unreadable) == ["model", "targets"]


def test_values_inside_the_choices_are_read():
    defaults = DEFAULTS | {"targets": ["fc1"]}
    values, unreadable = links.from_query({"model": "cnn", "targets": "fc2,fc1"}, defaults, CHOICES)
    assert not unreadable
    assert values["model"] == "cnn" and values["targets"] == ["fc2", "fc1"]


# ----------------------------------------------------------------------------- exercise links

TRAIN = links.train_defaults()


def test_hide_names_the_pages_settings_in_page_order_and_reports_the_rest():
    hidden, unknown = links.hidden_from_query({"hide": "steps, lr,nosuch,,seed"}, TRAIN)
    assert hidden == ["lr", "steps", "seed"]  # as the page lists them, not as the link did
    assert unknown == ["nosuch"]
    assert links.hidden_from_query({}, TRAIN) == ([], [])
    assert links.hidden_from_query({"hide": ""}, TRAIN) == ([], [])
    assert links.hidden_from_query({"hide": "lang,presenter"}, TRAIN) == (
        [],
        ["lang", "presenter"],
    )  # the app's parameters are not a page's controls


def test_an_exercise_query_fixes_every_hidden_value_even_a_default():
    values = TRAIN | {"lr": 0.003, "rank": 8}
    query = links.exercise_query(values, TRAIN, ["steps", "lr", "seed"])
    assert query == {
        "rank": "8",
        "lr": "0.003",
        "steps": str(links.TRAIN_STEPS),  # the default, written out all the same
        "seed": "0",
        "hide": "lr,steps,seed",
    }
    assert links.exercise_query(values, TRAIN) == links.to_query(values, TRAIN)
    with pytest.raises(ValueError, match="not a setting of this page: nosuch"):
        links.exercise_query(values, TRAIN, ["lr", "nosuch"])


def test_an_exercise_link_reads_back_as_the_same_settings_and_hidden_controls():
    """The full URL, taken apart by urllib (not by links), gives the page what the teacher
    chose: every value, and the controls to hide."""
    values = TRAIN | {"shift": "rotate", "shift_params": {"angle": 90.0}, "lr": 0.003}
    values |= {"targets": "fc1,fc2"}
    url = links.page_url(
        "http://127.0.0.1:8501/", "train", links.exercise_query(values, TRAIN, ["lr", "seed"])
    )
    parts = urlsplit(url)
    assert (parts.netloc, parts.path) == ("127.0.0.1:8501", "/train")
    assert "hide=lr,seed" in parts.query  # commas stay readable
    params = dict(parse_qsl(parts.query))
    read, unreadable = links.from_query(params, TRAIN, links.TRAIN_CHOICES)
    assert not unreadable
    assert RunConfig.from_dict(read) == RunConfig.from_dict(values)
    assert links.hidden_from_query(params, TRAIN) == (["lr", "seed"], [])


def test_a_page_url_without_a_query_is_the_page():
    assert links.page_url("http://host:8501", "compare", {}) == "http://host:8501/compare"


@pytest.mark.parametrize("lesson", lessons.LESSONS, ids=lambda lesson: lesson.id)
def test_every_lesson_makes_an_exercise_link_to_its_page(lesson):
    defaults = links.page_defaults(lesson.page)
    assert defaults == PAGE_DEFAULTS[lesson.page]
    hidden = list(defaults)[-2:]
    query = links.exercise_query(defaults | lesson.settings, defaults, hidden)
    values, unreadable = links.from_query(query, defaults)
    assert not unreadable and values == defaults | lesson.settings
    assert links.hidden_from_query(query, defaults) == (hidden, [])


def test_presenter_mode_reads_as_a_flag():
    flag = {links.PRESENTER: False}
    assert links.from_query({"presenter": "1"}, flag) == ({"presenter": True}, [])
    assert links.from_query({"presenter": "true"}, flag) == ({"presenter": True}, [])
    assert links.from_query({"presenter": "big"}, flag) == ({"presenter": False}, ["presenter"])


def test_a_link_without_a_learning_rate_leaves_it_to_the_method():
    defaults = links.train_defaults()
    assert defaults["lr"] is None  # the Train page: each method at its own rate
    assert links.from_query({"lr": "0.05"}, defaults) == (defaults | {"lr": 0.05}, [])
    assert links.from_query({"lr": ""}, defaults) == (defaults, [])
    assert links.from_query({"lr": "fast"}, defaults) == (defaults, ["lr"])
    assert "lr" not in links.to_query(defaults | {"method": "full"}, defaults)
    sweep = links.compare_configs(links.COMPARE_DEFAULTS, "all-linear")
    assert {c.method: c.learning_rate for c in sweep} == {"lora": 1e-2, "head": 1e-2, "full": 1e-3}


# ----------------------------------------------------------------------------- the app's address


@pytest.mark.parametrize(
    ("page_url", "page_path", "address"),
    [
        ("http://127.0.0.1:8501", "", "http://127.0.0.1:8501"),  # Learn, the default page
        ("http://127.0.0.1:8501/", "", "http://127.0.0.1:8501"),
        ("http://127.0.0.1:8501/train", "train", "http://127.0.0.1:8501"),
        ("http://127.0.0.1:8501/compare/", "compare", "http://127.0.0.1:8501"),
        ("https://school.example/lab/train", "train", "https://school.example/lab"),  # a proxy
        ("https://school.example/train", "", "https://school.example/train"),  # prefix "train"
        ("https://school.example/lab-train", "train", "https://school.example/lab-train"),
        ("http://host:8501/train?rank=8#top", "train", "http://host:8501"),
    ],
)
def test_the_apps_address_is_the_pages_without_the_pages_path(page_url, page_path, address):
    assert links.app_address(page_url, page_path) == address


@pytest.mark.parametrize("page", ["train", "compare"])
def test_a_pages_link_to_itself_names_the_page_once(page):
    """What the Train and Compare pages build: their exercise link starts from the address of
    the page they are on. (It was /train/train, a blank page.)"""
    for shown_at in (f"http://127.0.0.1:8501/{page}", f"https://school.example/lab/{page}/"):
        url = links.page_url(links.app_address(shown_at, page), page, {"rank": "8"})
        assert urlsplit(url).path == urlsplit(shown_at).path.rstrip("/")
        assert url.endswith(f"/{page}?rank=8")


# ----------------------------------------------------------------------------- repeated keys


def test_a_repeated_key_is_unreadable_and_the_others_are_read():
    params = links.query_values({"rank": ["4", "8"], "alpha": ["16"], "dora": ["true"], "seed": []})
    assert params == {"rank": ["4", "8"], "alpha": "16", "dora": "true"}
    assert links.from_query(params, DEFAULTS) == (
        DEFAULTS | {"alpha": 16.0, "dora": True},
        ["rank"],
    )


def test_a_repeated_key_of_a_list_setting_is_unreadable_too():
    """``ranks=1&ranks=8`` may mean [1, 8] or either one: reported, not guessed."""
    params = links.query_values({"ranks": ["1", "8"], "runs": ["3"]})
    values, unreadable = links.from_query(params, links.COMPARE_DEFAULTS, links.COMPARE_CHOICES)
    assert unreadable == ["ranks"]
    assert values == links.COMPARE_DEFAULTS | {"runs": ["3"]}


def test_a_repeated_hide_hides_nothing_and_each_value_is_reported():
    params = links.query_values({"hide": ["lr", "seed"]})
    assert links.hidden_from_query(params, TRAIN) == ([], ["lr", "seed"])


def test_what_a_link_wrote_is_one_short_printable_line_a_value():
    params = {
        "rank": ["4", "8"],
        "model": "x" * 10_000,
        "targets": "fc1\n\u202efc2\x00",
        "a": "中文",
    }
    written = links.as_written(params, ["rank", "model", "targets", "a"])
    assert written[:2] == ["rank=4", "rank=8"]
    assert written[2] == "model=" + "x" * (links.SHOWN_CHARS - 1) + "…"
    assert written[3] == "targets=fc1\\n\\u202efc2\\x00"
    assert written[4] == "a=中文"  # printable text stays as it is
    assert all(line.isprintable() for line in written)


# ----------------------------------------------------------------------------- on the pages

PHISHING = "[Session expired: sign in again](https://evil.example/login)"
BEACON = "![x](http://127.0.0.1:9/beacon.png)"
MARKDOWN_KINDS = ("title", "header", "subheader", "markdown", "caption", "warning", "error")
MARKDOWN_KINDS += ("info", "success", "toast")  # every element whose text reads Markdown


def markdown_said(at: AppTest) -> str:
    return "\n".join(element.value for kind in MARKDOWN_KINDS for element in at.get(kind))


def plain_said(at: AppTest) -> str:
    return "\n".join(element.value for element in at.get("text"))


@pytest.mark.parametrize("page", ["train", "compare"])
@pytest.mark.parametrize("value", [PHISHING, BEACON], ids=["link", "image"])
def test_a_links_hide_value_is_said_as_text_never_as_markdown(lab_home, page, value):
    """The warning names the setting (hide); what the link wrote is plain text under it, so the
    app's own warning holds no link a student would trust and loads no image."""
    at = open_page(page, {"hide": f"seed,{value}"})
    assert [warning.value for warning in at.warning] == [
        catalog().t("common.bad_link", keys="hide")
    ]
    assert "](" not in markdown_said(at) and "127.0.0.1:9" not in markdown_said(at)
    assert f"hide={value}" in plain_said(at).splitlines()
    assert f"{page}.seed" not in {box.key for box in at.number_input}  # the rest is hidden


def test_a_repeated_key_is_named_as_unreadable_on_the_page(lab_home):
    at = open_page("train", {"rank": ["4", "8"], "alpha": "16"})
    assert [warning.value for warning in at.warning] == [
        catalog().t("common.bad_link", keys="rank")
    ]
    assert plain_said(at).splitlines() == ["rank=4", "rank=8"]
    assert at.session_state["train.rank"] == links.train_defaults()["rank"]  # neither guessed
    assert at.session_state["train.alpha"] == 16.0


def test_a_zips_entry_names_are_said_as_text_on_compare(lab_home):
    """An upload's error names its entries: as text under the app's sentence."""
    entry = f"../{PHISHING}/adapter_config.json"
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as archive:
        archive.writestr(entry, "{}")
    at = open_page("compare")
    at.file_uploader(key="compare.upload").set_value(
        ("a.zip", packed.getvalue(), "application/zip")
    )
    at.run()
    at.button(key="compare.import").click().run()
    assert [error.value for error in at.error] == [catalog().t("compare.import_failed")]
    assert "evil.example" not in markdown_said(at)
    assert repr(entry) in plain_said(at)


@pytest.fixture
def paused_run(lab_home) -> Iterator[int]:
    """A run whose status was set by hand to one the app has no word for; deleted after."""
    with runs.RunStore() as store:
        run_id = store.create(RunConfig(steps=5))
    with sqlite3.connect(runs.store_location()) as db:
        db.execute("UPDATE runs SET status = 'paused', has_weights = 1 WHERE id = ?", (run_id,))
    yield run_id
    with runs.RunStore() as store:
        store.delete(run_id)


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("page", ["compare", "spectra"])
def test_a_status_the_app_has_no_word_for_is_listed_as_stored(paused_run, teacher_key, page, lang):
    query = {"everyone": "true", "lang": lang} | (
        {"run": str(paused_run)} if page == "spectra" else {}
    )
    at = open_page(page, query, first={"lang": lang}, teacher=True)  # another's run
    assert not at.exception
    labels = [option for box in [*at.selectbox, *at.multiselect] for option in box.options]
    assert f"#{paused_run} · {default_name(RunConfig(steps=5))} · paused" in labels
    if page == "compare":  # the table of runs too
        table = at.dataframe[0].value  # every run on the server: other tests' runs too
        paused = table[table["id"] == paused_run]
        assert list(paused[catalog(lang).t("compare.col_status")]) == ["paused"]


@pytest.mark.parametrize(
    ("page", "query", "unread"),
    [
        ("train", {"rank": "four"}, "rank"),
        # found out only while the settings are drawn:
        ("train", {"targets": "no.such.layer"}, "targets"),
        ("train", {"shift": "rotate", "shift_params": '{"angle": "x"}'}, "shift_params"),
        ("compare", {"steps": "many"}, "steps"),
        ("spectra", {"run": "first"}, "run"),
    ],
    ids=["train", "train-targets", "train-shift", "compare", "spectra"],
)
def test_a_bad_links_warning_comes_before_the_settings(lab_home, teacher_key, page, query, unread):
    """On a 1280×720 projector only the top of the page is seen: a warning drawn below the
    settings (or below the Train page's curves) would go unread. (The teacher's page: a Spectra
    page without runs draws only the teacher's every-run switch.)"""
    at = open_page(page, query, teacher=True)
    order = list(drawn(at.main))
    assert catalog().t("common.bad_link", keys=unread) in [
        node.value for node in order if node.type == "warning"
    ]
    warning = next(i for i, node in enumerate(order) if node.type == "warning")
    setting = next(i for i, node in enumerate(order) if f"{node.key}".startswith(f"{page}."))
    assert warning < setting


def drawn(node) -> Iterator:
    """Every element under `node`, in the order the page draws them (depth first)."""
    children = getattr(node, "children", None)
    if children is None:
        yield node
        return
    for index in sorted(children):
        yield from drawn(children[index])
