"""Names: what a run is called by default, how a typed name is checked, how stored text is shown
(in a figure, on a terminal), the table of runs, and where a scatter plot writes its labels."""

from __future__ import annotations

import itertools
import unicodedata

import pytest
from markdown_it import MarkdownIt

from core.classroom import labels
from core.common.config import DATASETS, MODELS, SHIFTS, RunConfig, SettingError
from core.common.text import for_figure, for_markdown, for_terminal, one_line
from core.store.names import RUN_NAME_CHARS, STUDENT_NAME_CHARS, checked_name, default_name
from core.store.records import RunRecord, table_row

# -- default names --------------------------------------------------------------------------------
# Pairs of runs a class compares (issue 18): each pair differs in one setting, and so in its name.
PAIRS = {
    "dora": ({}, {"dora": True}),
    "targets": ({"model": "vit"}, {"model": "vit", "targets": "*.attn.q,*.attn.v"}),
    "alpha": ({}, {"alpha": 16.0}),
    "rank": ({}, {"rank": 8}),
    "init": ({}, {"init": "pissa"}),
    "scaling": ({}, {"scaling": "rslora"}),
    "method": ({}, {"method": "full"}),
    "shift": ({}, {"shift": "none"}),
    "train_head": ({}, {"train_head": False}),
    "train_head, full": ({"method": "full"}, {"method": "full", "train_head": False}),
}


@pytest.mark.parametrize("setting", PAIRS)
def test_runs_that_differ_in_a_setting_have_different_default_names(setting):
    first, second = (default_name(RunConfig(**settings)) for settings in PAIRS[setting])
    assert first != second


def test_a_default_name_says_the_settings_in_a_few_words():
    assert default_name(RunConfig()) == "lora r=4 α=8 · mlp · mnist-5k/rotate"
    dora = RunConfig(dora=True, alpha=16, targets=["fc1", "fc2"], shift="none")
    assert default_name(dora) == "dora r=4 α=16 · mlp[fc1,fc2] · mnist-5k"
    assert default_name(RunConfig(method="head")) == "head · mlp · mnist-5k/rotate"


def test_every_default_name_fits_and_can_be_typed_back():
    """A run can be renamed to the name it has: the longest default name passes checked_name,
    and one with many target layers is cut to fit."""
    widest = {"rank": 256, "alpha": 512.5, "dora": True, "init": "pissa", "scaling": "rslora"}
    for model, dataset, shift in itertools.product(MODELS, DATASETS, SHIFTS):
        name = default_name(RunConfig(model=model, dataset=dataset, shift=shift, **widest))
        assert checked_name(name, RUN_NAME_CHARS) == name
    many = default_name(RunConfig(targets=[f"blocks.{i}.attn.q" for i in range(12)]))
    assert len(many) <= RUN_NAME_CHARS and "…]" in many


# -- names as they are typed ----------------------------------------------------------------------
def test_a_name_keeps_its_text_with_its_whitespace_made_single_spaces():
    assert checked_name("  Ann\tLee\n", STUDENT_NAME_CHARS) == "Ann Lee"
    assert checked_name("王\u3000小明", STUDENT_NAME_CHARS) == "王 小明"  # a wide space
    assert checked_name("x" * STUDENT_NAME_CHARS, STUDENT_NAME_CHARS) == "x" * 40
    assert checked_name("<b>x</b> & 'y'", STUDENT_NAME_CHARS) == "<b>x</b> & 'y'"  # text as typed
    assert checked_name(" \n ", STUDENT_NAME_CHARS) == ""


HIDDEN = ["\x1b", "\x07", "\x00", "\x7f", "\x9b", "\u202e", "\u200b", "\udcff"]


@pytest.mark.parametrize("hidden", HIDDEN, ids=[f"U+{ord(c):04X}" for c in HIDDEN])
def test_a_name_with_a_control_character_is_refused_naming_it(hidden):
    with pytest.raises(SettingError) as refused:
        checked_name(f"red{hidden}[2J", RUN_NAME_CHARS)
    code = f"U+{ord(hidden):04X}"
    assert code in str(refused.value) and refused.value.values == {"code": code}
    assert unicodedata.category(hidden) in ("Cc", "Cf", "Cs")  # (the test's own premise)


def test_a_name_longer_than_its_limit_is_refused_with_both_lengths():
    with pytest.raises(SettingError, match="at most 100 characters, this one has 100000"):
        checked_name("x" * 100_000, RUN_NAME_CHARS)
    with pytest.raises(SettingError) as refused:
        checked_name("x" * 41, STUDENT_NAME_CHARS)
    assert refused.value.values == {"most": 40, "length": 41}


# -- stored text, shown ---------------------------------------------------------------------------
def test_for_figure_writes_html_as_the_characters_themselves():
    shown = for_figure('<a href="https://evil.example">pwn</a> & <b>x</b>')
    assert "<" not in shown and ">" not in shown
    assert shown == '&lt;a href="https://evil.example"&gt;pwn&lt;/a&gt; &amp; &lt;b&gt;x&lt;/b&gt;'
    assert for_figure("lora r=4 · 王小明") == "lora r=4 · 王小明"


HOSTILE_MARKDOWN = [
    "[Session expired: sign in again](https://evil.example/login)",
    "![x](http://127.0.0.1:9/beacon.png)",
    "<b>x</b><img src=x onerror=alert(1)>",
    "**bold** _it_ `code` ~~gone~~ # head",
    "a\\[b](c) \\\\ back\\slashes",
    "<https://evil.example>",
]


@pytest.mark.parametrize("name", HOSTILE_MARKDOWN)
def test_for_markdown_shows_the_characters_themselves(name):
    """CommonMark (markdown-it, as Streamlit's renderer follows it) renders the escaped text as
    one paragraph holding exactly `name`: no link, image, emphasis, code or HTML."""
    tokens = MarkdownIt("commonmark").parseInline(for_markdown(name))[0].children
    assert [t.type for t in tokens] == ["text"] * len(tokens)
    assert "".join(t.content for t in tokens) == name


def test_for_terminal_writes_control_codes_as_escapes_on_one_line():
    shown = for_terminal("\x1b]0;owned\x07\x1b[2J\nforged\u202erow")
    assert shown == "\\x1b]0;owned\\x07\\x1b[2J\\nforged\\u202erow"
    assert all(c.isprintable() for c in shown)
    assert for_terminal("王小明 r=4") == "王小明 r=4"


def test_one_line_cuts_an_unchecked_name_to_its_limit():
    assert one_line("adapter.zip", 20) == "adapter.zip"
    assert one_line("a\x1b" + "b" * 50, 10) == "a\\x1bbbbb…"
    assert len(one_line("x" * 300, 100)) == 100


# -- the table of runs ----------------------------------------------------------------------------
def record(config: RunConfig, **fields: object) -> RunRecord:
    values = {
        "id": 7, "name": "mine", "owner": "o", "config": config, "status": "finished",
        "reason": "", "created": 0.0, "seconds": 2.5, "test_acc_before": 0.4,
        "test_acc_after": 0.9, "trainable_params": 100, "total_params": 1000, "num_classes": 10,
        "torch_threads": 1, "has_weights": True, "source_acc_before": 0.6,
        "source_acc_after": 0.5,
    }  # fmt: skip
    return RunRecord(**{**values, **fields})


def test_a_table_row_has_the_settings_that_tell_runs_apart():
    dora = table_row(record(RunConfig(dora=True, alpha=16, targets=["fc1"], lr=0.003)), "Ann")
    assert (dora.method, dora.rank, dora.alpha, dora.dora, dora.targets) == (
        "lora",
        4,
        16.0,
        True,
        "fc1",
    )
    assert (dora.lr, dora.student, dora.after, dora.seconds) == (0.003, "Ann", 0.9, 2.5)
    plain = table_row(record(RunConfig()))
    assert (plain.dora, plain.targets, plain.student) == (False, "all-linear", "")
    head = table_row(record(RunConfig(method="head", dora=True)))  # dora: a LoRA setting
    assert (head.rank, head.alpha, head.dora, head.targets, head.lr) == (
        None, None, False, None, 0.01
    )  # fmt: skip


# -- labels of a scatter plot ---------------------------------------------------------------------
PLOT = (640.0, 280.0)


def placed(points, widths, height=18.0, marker=14.0) -> list[labels.Box]:
    sides = labels.label_sides(points, widths, height, marker, PLOT)
    return [
        labels.label_box(x, y, w, height, marker, s)
        for (x, y), w, s in zip(points, widths, sides, strict=True)
    ]


def test_a_lone_label_goes_above_its_point():
    assert labels.label_sides([(100, 100)], [36], 18, 14, PLOT) == ["top center"]


def test_a_label_stays_inside_the_plot_area():
    """At the right edge a long label goes to the left, at the top below its point."""
    assert labels.label_sides([(630, 100)], [200], 18, 14, PLOT) == ["middle left"]
    assert labels.label_sides([(300, 275)], [36], 18, 14, PLOT) == ["bottom center"]


LABEL = (36.0, 18.0)  # "r=16" in a 15 px font: width, height


@pytest.mark.parametrize(
    ("points", "touching"),
    [
        ([(300, 200), (302, 203)], 0),  # r = 16 and r = 64 at nearly one point
        ([(100, 120), (130, 125), (160, 118)], 0),  # three in a row, closer than a label's width
        # three or four on one point: the labels at most touch at a corner (2 % of a label)
        ([(300, 200), (300, 200), (301, 199)], 0.02),
        ([(300, 200), (300, 200), (301, 199), (299, 201)], 0.02),
    ],
    ids=["two", "row", "three-on-one", "four-on-one"],
)
def test_labels_of_nearby_points_do_not_overlap(points, touching):
    width, height = LABEL
    boxes = placed(points, [width] * len(points), height)
    for one, other in itertools.combinations(boxes, 2):
        assert one.overlap(other) <= touching * width * height
    # (all of them above their points, as plotly would write them, would overlap)
    above = [labels.label_box(x, y, width, height, 14, "top center") for x, y in points]
    assert all(
        any(box.overlap(other) > touching * width * height for other in above if other is not box)
        for box in above
    )


def test_points_on_one_another_share_one_label():
    points = [(300, 200), (309, 205), (302, 196), (340, 200), (300, 240), (301, 199)]
    texts = ["r=16", "r=64", "", "r=1", "r=2", "r=16"]
    assert labels.merged(points, texts, marker=14) == ["r=16, r=64", "", "", "r=1", "r=2", ""]
    assert labels.merged(points[3:5], texts[3:5], marker=14) == texts[3:5]  # apart: as they are


def test_a_point_without_a_label_takes_no_room():
    sides = labels.label_sides([(100, 100), (101, 100)], [0, 36], 18, 14, PLOT)
    assert sides[1] == "top center"


def test_box_overlap_is_the_shared_area():
    assert labels.Box(0, 0, 10, 10).overlap(labels.Box(5, 5, 20, 20)) == 25
    assert labels.Box(0, 0, 10, 10).overlap(labels.Box(10, 0, 20, 10)) == 0
