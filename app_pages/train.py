"""Train: choose a model, a task and a method, then watch the run live.

The settings are drawn here; the run they start, its live curves and its outcome are
app_pages.common.live_run's (the view of a run while it trains and once it ended).
"""

from typing import Any

import streamlit as st

from app_pages.common import (
    bad_link,
    choice,
    current_settings,
    drawn,
    exercise_link,
    fixed_by_link,
    goal_section,
    language,
    load_settings,
    refused,
    save_settings,
    task_strip,
    titled_select,
    tr,
)
from app_pages.common.live_run import (
    PAGE,
    charts,
    current_view,
    key,
    live_view,
    resume,
    running,
    start,
)
from app_pages.figures.train import layers_table
from core.classroom import links, train_form
from core.classroom.i18n import catalog
from core.common import paths
from core.common.config import BOUNDS, DEFAULT_LR, DEFAULT_MODEL, kind_of_model
from core.lowrank import methods
from core.lowrank.targets import eligible_layers
from core.training import data

CHOICES = links.TRAIN_CHOICES  # the widgets offer what a link may name
STRIP_KEYS = ("model", "dataset", "shift", "shift_params", "seed")  # what the task's images show


def show(name: str) -> bool:
    """Whether the control of setting ``name`` is drawn (an exercise link may hide it)."""
    return drawn(PAGE, name)


def slots(names: list[str], **columns: Any) -> dict[str, Any]:
    """A column for each shown control of ``names``, left to right in a row of len(names)
    columns: controls an exercise link hides leave no gaps."""
    row = st.columns(len(names), **columns)
    return dict(zip([name for name in names if show(name)], row, strict=False))


# ----------------------------------------------------------------------------- the settings


def model_changed() -> None:
    """The student picked another model: the form takes the settings that model starts from
    where they differ from the last one's (train_form.moved_settings: a language model's text,
    task, targets, batch and steps; the image defaults on the way back)."""
    new = st.session_state[key("model")]
    for name, value in train_form.moved_settings(st.session_state[key("_model")], new).items():
        st.session_state[key(name)] = value


def task_settings() -> None:
    """Model (with its card), dataset and task shift (with its explanation); the dataset and
    shift boxes offer those of the kind of data the model reads."""
    col_model, col_data, col_shift = st.columns(3)
    with col_model:
        if show("model"):
            titled_select(
                st, "train.model", CHOICES["model"], key("model"), "models", on_change=model_changed
            )
        model = st.session_state[key("model")]  # the box's value, or the one a link fixed
        st.session_state[key("_model")] = model  # what model_changed moves away from
        st.caption(tr(f"models.{model}.summary"))
        st.caption(train_form.card_line(model, catalog(language())))
    with col_data:
        if show("dataset"):
            offered = train_form.choices_for(model, "dataset", st.session_state[key("dataset")])
            titled_select(st, "train.dataset", offered, key("dataset"), "datasets")
        dataset = st.session_state[key("dataset")]
        st.caption(tr(f"datasets.{dataset}.description"))
    with col_shift:
        if show("shift"):
            offered = train_form.choices_for(model, "shift", st.session_state[key("shift")])
            titled_select(st, "train.shift", offered, key("shift"), "shifts")
        shift = st.session_state[key("shift")]
        st.caption(tr(f"shifts.{shift}.explanation"))
        if show("shift_params"):
            shift_parameters(shift)


def shift_parameters(shift: str) -> None:
    """One number/text box per parameter of the shift; stored together as ``shift_params``.

    No box for a shift's "seed": a run draws the permutation (or ΔW*) with its own seed (see
    core.training.data.load_task), so a caption says that instead of offering a box that would not
    be the seed used.
    """
    chosen = st.session_state[key("shift_params")]
    if "shift_params" in st.session_state[key("_fresh")]:
        chosen, readable = train_form.link_shift_params(shift, chosen)
        if not readable:  # a link's parameters that no box can hold: the defaults instead
            with link_problems:
                bad_link(["shift_params"])
    params = {}
    for name, default in data.SHIFTS[shift].params.items():
        if name == "seed":
            st.caption(tr("train.shift_seed"))
            continue
        value = chosen.get(name, default)
        widget_key = key(f"shift.{shift}.{name}")
        label = tr(f"shift_params.{name}")
        if isinstance(default, float):
            params[name] = st.number_input(label, value=float(value), key=widget_key)
        elif isinstance(default, int):
            params[name] = st.number_input(label, value=int(value), step=1, key=widget_key)
        else:
            params[name] = st.text_input(label, value=str(value), key=widget_key)
    st.session_state[key("shift_params")] = train_form.changed_shift_params(shift, params)


# Each number box of a setting: its label (a catalog key, or "α" as is), step, help (a catalog
# key) and bounds beyond the config's own.
BOXES: dict[str, tuple[str, float, str | None, dict[str, float]]] = {
    "top_k": ("train.top_k", 1, None, {}),
    "rank": ("train.rank", 1, "train.rank_help", {}),
    "alpha": ("α", 1.0, "train.alpha_help", {}),
    "lora_plus_ratio": (
        "train.lora_plus", 1.0, "train.lora_plus_help", {"min_value": BOUNDS["lora_plus_ratio"].low}
    ),
    "dropout": ("train.dropout", 0.05, "train.dropout_help", {"min_value": 0.0, "max_value": 0.9}),
    "steps": ("train.steps", 50, None, {}),
    "batch_size": ("train.batch_size", 16, None, {}),
    "seed": ("train.seed", 1, None, {}),
}  # fmt: skip
SELECTS = {"method": "methods", "init": "inits", "scaling": "scalings"}  # setting → its names


def boxes(cols: dict[str, Any]) -> None:
    """The number boxes (BOXES) and select boxes (SELECTS) of the shown settings in ``cols``."""
    for name, where in cols.items():
        if name in SELECTS:
            names = SELECTS[name]
            choice(where.selectbox, tr(f"train.{name}"), CHOICES[name], key(name),
                   lambda value, names=names: tr(f"{names}.{value}"))  # fmt: skip
        elif name in BOXES:
            label, step, help_key, bounds = BOXES[name]
            where.number_input(
                tr(label) if label.startswith("train.") else label,
                step=step,
                key=key(name),
                persist_state="session",
                help=tr(help_key) if help_key else None,
                **bounds,
            )


def method_settings() -> None:
    """Method, and for LoRA its rank, alpha, init, scaling and DoRA."""
    method = st.session_state[key("method")]  # the box's value (drawn below), or a link's
    cols = slots(["method", "top_k" if method == "top-k" else "rank", "alpha"])
    boxes({"method": cols["method"]} if "method" in cols else {})
    st.caption(tr(f"methods.{method}_help"))
    if show("train_head"):  # also for head-only training, which refuses it off: it is seen
        st.toggle(
            tr("train.train_head"),
            key=key("train_head"),
            persist_state="session",
            help=tr("train.train_head_help"),
        )
    if method == "top-k":
        boxes({name: where for name, where in cols.items() if name == "top_k"})
    if method != "lora":
        return
    boxes({name: where for name, where in cols.items() if name in ("rank", "alpha")})
    cols = slots(["init", "scaling", "dora"], vertical_alignment="bottom")
    boxes({name: where for name, where in cols.items() if name != "dora"})
    if "dora" in cols:
        cols["dora"].checkbox(
            "DoRA", key=key("dora"), persist_state="session", help=tr("train.dora_help")
        )
    boxes(slots(["lora_plus_ratio", "dropout", ""]))  # "": an empty third column, as above


def training_settings() -> None:
    """Learning rate (empty: the method's own, config.DEFAULT_LR), steps, batch size, seed."""
    method = st.session_state[key("method")]
    cols = slots(["lr", "steps", "batch_size", "seed"])
    if "lr" in cols:
        cols["lr"].number_input(
            tr("train.lr"),
            step=1e-3,
            format="%g",
            key=key("lr"),
            persist_state="session",
            placeholder=tr("train.lr_placeholder", lr=f"{DEFAULT_LR[method]:g}"),
            help=tr("train.lr_help", defaults=lr_defaults()),
        )
    boxes({name: where for name, where in cols.items() if name != "lr"})


def lr_defaults() -> str:
    """Each method's default learning rate, in words: "LoRA 0.01, full fine-tuning 0.001, …"."""
    return ", ".join(f"{tr(f'methods.{m}')} {DEFAULT_LR[m]:g}" for m in CHOICES["method"])


def target_layers(base) -> None:
    """The table of layers LoRA can adapt, with their cost at the chosen rank; pick targets.
    A model shown for the first time (the student switched to it, or a link named it) starts
    from the chosen targets if they pick a layer of it (train_form.starting_targets)."""
    rank = st.session_state[key("rank")]
    model = st.session_state[key("model")]
    layers = eligible_layers(base, rank)
    picker = key(f"pick.{model}")
    if picker not in st.session_state:
        chosen, picks = train_form.starting_targets(base, model, st.session_state[key("targets")])
        if not picks and "targets" in st.session_state.get(key("_fresh"), []):
            with link_problems:  # a link's targets that pick no layer of this model
                bad_link(["targets"])
        st.session_state[picker] = chosen
    if show("targets"):
        presets(base, model, picker)
        picked = st.multiselect(
            tr("train.targets"),
            [layer.name for layer in layers],
            key=picker,
            help=tr("train.targets_help"),
        )
        st.session_state[key("targets")] = train_form.targets_setting(base, model, picked)
    else:  # an exercise fixed them: the table shows which, nothing changes them
        picked = st.session_state[picker]
    counts = st.column_config.NumberColumn(format="localized")  # 200,704 rather than 200704
    st.dataframe(
        layers_table(layers, picked, rank),
        hide_index=True,
        width="stretch",
        height=min(400, 38 + 35 * len(layers)),
        column_config={tr("train.col_lora", rank=rank): counts, tr("train.col_full"): counts},
    )
    st.page_link(
        "app_pages/spectra.py",
        label=tr("evidence.layers"),
        icon=":material/insights:",
        help=tr("evidence.layers_help"),
    )


def presets(base, model: str, picker: str) -> None:
    """One click for each of the model's named choices of targets (train_form.target_presets:
    for gpt the LoRA paper's), which sets the picked layers below; none for a model without."""
    named = train_form.target_presets(base, model)
    if not named:
        return

    def pick(layers: list[str]) -> None:
        st.session_state[picker] = layers

    st.caption(tr("train.presets_intro"))
    row = st.columns(2)  # two a row: each name whole, also in presenter mode
    for i, (name, layers) in enumerate(named.items()):
        row[i % 2].button(
            tr(f"train.presets.{name}"),
            key=key(f"preset.{name}"),
            on_click=pick,
            args=(layers,),
            width="stretch",
        )


def count_line(method: str, count: methods.ParamCount, train_head: bool) -> str:
    """How many parameters train, and where: adapters (or biases, blocks) and the head."""
    line = tr(
        "train.count",
        trainable=f"{count.trainable:,}",
        total=f"{count.total:,}",
        fraction=f"{count.fraction:.2%}",
    )
    split = train_form.count_split(method, count, train_head)
    return line if split is None else f"{line}  \n{tr(split[0], **split[1])}"


# ----------------------------------------------------------------------------- the page

st.title(tr("train.title"))
st.markdown(tr("train.intro"))
# What a link got wrong is said first, above everything a student could scroll past (also
# what only the settings below find out: shift parameters or targets no box can hold).
link_problems = st.container()
# The Train button and the live run come next (filled in below, once the settings are known):
# on a projector the curves must be visible without scrolling.
action = st.container()
# A link is read against the settings of the model it names (links.train_link_defaults): a
# gpt link says model=gpt and only what differs from gpt's own settings.
DEFAULTS = links.train_link_defaults(st.query_params.get("model", DEFAULT_MODEL))
with link_problems:
    load_settings(PAGE, DEFAULTS, CHOICES)

fixed_by_link(PAGE)
goal_section(PAGE, kind_of_model(st.session_state[key("model")]))
with st.container(border=True):
    st.subheader(tr("train.task_title"))
    task_settings()
    task_strip(*(st.session_state[key(name)] for name in STRIP_KEYS), key=key("strip"))
with st.container(border=True):
    st.subheader(tr("train.method_title"))
    method_settings()
    training_settings()

settings = current_settings(PAGE, DEFAULTS)
problem = None
try:
    base = train_form.base_model(settings)
except (paths.OfflineError, ValueError) as error:
    base, problem = None, str(error)
if base is not None and settings["method"] == "lora":
    with st.expander(tr("train.layers_title"), expanded=True):
        target_layers(base)
    settings = current_settings(PAGE, DEFAULTS)
exercise_link(PAGE, settings, key("exercise"), "exercise.intro")

# the form's run (also while the model cannot load: the shown run's check)
checked = train_form.check(settings, base)
config, count = checked.config, checked.count
if checked.refusal is not None:
    problem = problem or refused(checked.refusal)
save_settings(PAGE, links.train_link_defaults(settings["model"]))

with action:
    col_button, col_count = st.columns([1, 3], vertical_alignment="center")
    if problem is not None:
        st.error(problem)
    else:
        col_count.markdown(count_line(settings["method"], count, settings["train_head"]))
    resume()
    # The click is read before the button is drawn, so that the button is drawn disabled at
    # once while the new run goes on (not a callback: it would get the settings as they were
    # before this rerun, without a value typed just before the click).
    if st.session_state.get(key("start")) and problem is None and not running():
        start(config)
    col_button.button(
        tr("train.start"),
        type="primary",
        icon=":material/play_arrow:",
        disabled=problem is not None or running(),
        key=key("start"),
    )
    view = current_view()
    st.session_state[key("poll")] = None if view is None else view.poll_seconds()
    # A queued run's (empty) charts go outside the polling fragment: its polls redraw its place
    # in the queue, not its charts (a browser redraws a chart at every poll, even unchanged).
    # Its start changes the pace: a full rerun, which moves them in.
    st.session_state[key("charts_outside")] = view is not None and view.status == "queued"
    st.fragment(live_view, run_every=st.session_state[key("poll")])(config)
    if st.session_state[key("charts_outside")]:
        charts(view.frame, view.planned, view.kind)
