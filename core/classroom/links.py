"""Settings ↔ URL query parameters, so that a copied link reopens the same configuration.

A page's settings are a flat dict of plain values (int, float, bool, str, list
of str, dict) with known defaults. Only the values that differ from the default
go into the link, so links stay short; reading a link parses each value by the
type of its default and reports the ones it could not read instead of failing.
Values are written and read by core.common.config (to_text, parse), as the command line's
are: booleans are true/false (links from before that said 1/0, and still open).

A teacher's exercise link can also hide some of the page's controls (``hide=lr,seed,steps``,
as TensorFlow Playground's links do): a hidden control is not drawn, and its value is the
link's (or the default), so the exercise shows only what it is about.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from core.common import config
from core.common.config import RunConfig


def _kind(key: str, default: Any) -> Any:
    """The declared type a setting has, read off its default (a list's from its first item;
    the items of an empty list are text). A default of None is an optional RunConfig setting
    (lr: None = the method's own rate), whose type RunConfig declares."""
    if default is None:
        return config.setting_types()[key]
    if isinstance(default, list | tuple):
        return list[type(default[0]) if default else str]
    return type(default)


def _decode(key: str, text: str, default: Any) -> Any:
    """``text`` read as the type of ``default`` by core.common.config.parse, the reader of every
    setting; ValueError if it is not one."""
    return config.parse(text, _kind(key, default))


def encode(values: Mapping[str, Any]) -> dict[str, str]:
    """Every setting in ``values`` as a query parameter."""
    return {key: config.to_text(value) for key, value in values.items()}


def to_query(values: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, str]:
    """The query parameters for ``values``: one per setting that differs from its default."""
    return encode(
        {
            key: values[key]
            for key, default in defaults.items()
            if key in values and _normalise(values[key]) != _normalise(default)
        }
    )


def from_query(
    params: Mapping[str, str],
    defaults: Mapping[str, Any],
    choices: Mapping[str, Collection[Any]] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Settings read from ``params``: (every setting, the keys whose value was unreadable).

    ``choices`` lists the allowed values of some settings (a model's name, a shift); a value
    outside them (for a list: any item outside them) is unreadable too, never replaced by
    another choice, and so is a number outside its bound (core.common.config.BOUNDS, for a setting
    named as RunConfig's: rank, lr, steps, seed, …). A list is a key the link repeats
    (``rank=4&rank=8``, see `query_values`): which value was meant is anyone's guess, so it is
    unreadable, also for a setting that is a list. A value of any other type (None) is read or
    reported, never an error. Missing or unreadable settings take their default; keys that are
    not settings (another page's, the language) are ignored.
    """
    choices = choices or {}
    values = dict(defaults)
    unreadable = []
    for key, default in defaults.items():
        if key not in params:
            continue
        if isinstance(params[key], list | tuple):
            unreadable.append(key)
            continue
        try:
            value = _decode(key, params[key], default)
        except ValueError:
            unreadable.append(key)
            continue
        if not _allowed(value, choices.get(key), config.BOUNDS.get(key)):
            unreadable.append(key)
            continue
        values[key] = value
    return values, unreadable


def query_values(given: Mapping[str, Sequence[str]]) -> dict[str, str | list[str]]:
    """A link's parameters from every value it gives each key (a browser's query, as
    ``st.query_params.get_all`` reads it): a key given once has its value, a key given more
    than once the list of them all, which `from_query` and `hidden_from_query` report as
    unreadable rather than quietly pick one; a key with no value is not in the link."""
    return {
        key: values[0] if len(values) == 1 else list(values)
        for key, values in given.items()
        if values
    }


SHOWN_CHARS = 60  # of a link's value named in a warning: a megabyte of it still gives one line


def as_written(params: Mapping[str, Any], keys: Iterable[str]) -> list[str]:
    """What a link wrote for each of ``keys`` ("rank=four"; a repeated key once per value),
    each value cut to SHOWN_CHARS characters and its control characters escaped: for the page
    to show, as plain text, under the names it could not read, so whoever made the link sees
    what to fix (and a value that looks like Markdown or a link stays those characters)."""
    lines = []
    for key in keys:
        given = params.get(key)
        for value in given if isinstance(given, list | tuple) else [given]:
            lines.append(f"{_printable(key)}={_printable(_cut(str(value)))}")
    return lines


def _cut(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def _printable(text: str) -> str:
    """``text`` with each character that is not printable (a newline, NUL, a right-to-left
    override) written as its escape, as Python's repr writes it."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _allowed(value: Any, choices: Collection[Any] | None, bound: config.Bound | None) -> bool:
    """Is ``value`` (or each item of a list) among ``choices``, and if a number, in ``bound``?"""
    for item in value if isinstance(value, list) else [value]:
        if choices is not None and item not in choices:
            return False
        if bound is not None and isinstance(item, int | float) and item not in bound:
            return False
    return True


def _normalise(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# ----------------------------------------------------------------------------- each page's settings

TRAIN_STEPS = 200  # a run a class can watch: ~10 s for the MLP on a laptop CPU
TRAIN_KEYS = (
    "model", "dataset", "shift", "shift_params", "method", "rank", "alpha", "targets", "init",
    "scaling", "dora", "lora_plus_ratio", "dropout", "top_k", "train_head", "lr", "steps",
    "batch_size", "seed",
)  # fmt: skip


def train_defaults(model: str = config.DEFAULT_MODEL) -> dict[str, Any]:
    """The Train page's settings for a run on ``model``: the settings it starts from
    (core.common.config.for_model: RunConfig's defaults, and a language model's own dataset,
    shift, targets, batch and steps), with TRAIN_STEPS to watch where the model sets none.

    ``targets`` stays a string ("all-linear" or comma-separated names/globs), as
    RunConfig.from_dict reads it.
    """
    return train_settings(config.for_model(model))


def train_settings(run: RunConfig) -> dict[str, Any]:
    """The Train page's settings of a run's config (TRAIN_STEPS where it plans by epochs)."""
    values = run.to_dict()
    values["steps"] = values["steps"] or TRAIN_STEPS
    if isinstance(values["targets"], list):  # as the page keeps them: one string
        values["targets"] = ",".join(values["targets"])
    return {key: values[key] for key in TRAIN_KEYS}


def settings_query(run: RunConfig) -> dict[str, str]:
    """The query of a link to the Train page with a run's settings: what a link to another
    student's run opens (its settings, never the run itself)."""
    return to_query(train_settings(run), train_link_defaults(run.model))


def train_link_defaults(model: str) -> dict[str, Any]:
    """What a link to the Train page leaves out when it names ``model``: that model's own
    settings (train_defaults), so a gpt link says model=gpt and what differs from gpt's
    defaults, not every setting in which gpt differs from the digit models. The model itself
    is left out only where it is the app's default model. A model that is not a choice (a
    link's typo) reads against the app's defaults: the page reports it."""
    own = model if model in config.MODELS else config.DEFAULT_MODEL
    return train_defaults(own) | {"model": config.DEFAULT_MODEL}


TRAIN_CHOICES = {  # a link naming anything else is reported, never replaced by another choice
    key: values for key, values in config.config_choices().items() if key in TRAIN_KEYS
}

SPECTRA_DEFAULTS: dict[str, Any] = {
    "run": 0,  # run id, 0 = the newest run
    "step": 0,  # the moment (a snapshot's step) to open, 0 = the last one
    "layer": "",  # "" = the first adapted layer
    "other": 0,  # second run for the subspace similarity, 0 = none
    "normalised": False,
    "everyone": False,  # list every run on the server, not only this session's
}

COMPARE_DEFAULTS: dict[str, Any] = {
    "model": RunConfig.model,  # the task of a run with RunConfig's defaults
    "dataset": RunConfig.dataset,
    "shift": RunConfig.shift,
    "ranks": [1, 2, 4, 8, 16],
    "baselines": True,  # also run head-only and full fine-tuning
    "steps": TRAIN_STEPS,
    "seed": 0,
    "runs": [],  # ids of the runs whose curves are overlaid (strings, as in the link)
    "everyone": False,
}
RANK_CHOICES = [1, 2, 4, 8, 16, 32, 64]  # the ranks a sweep offers
COMPARE_CHOICES = {
    **{key: config.config_choices()[key] for key in ("model", "dataset", "shift")},
    "ranks": RANK_CHOICES,
}


def compare_configs(settings: Mapping[str, Any], targets: list[str] | str) -> list[RunConfig]:
    """The runs the Compare page's sweep launches (core.common.config.sweep_configs): LoRA at
    each of ``settings``' ranks, then head-only and full fine-tuning if it asks for baselines,
    all on its task for its steps and seed. LoRA adapts ``targets``: the page passes the model's
    default targets (core.training.zoo.default_targets), which pick a layer of every model.
    The rest is the model's own starting settings (config.for_model: a language model's batch
    of windows, its evaluations every 20 steps)."""
    base = replace(
        config.for_model(settings["model"]),
        dataset=settings["dataset"],
        shift=settings["shift"],
        targets=targets,
        steps=settings["steps"],
        seed=settings["seed"],
    )
    return config.sweep_configs(base, settings["ranks"], baselines=settings["baselines"])


# ----------------------------------------------------------------------------- exercise links

HIDE = "hide"  # the parameter that lists the controls an exercise link hides
PRESENTER = "presenter"  # true: large text and figures, for a projector
APP_PARAMS = ("lang", PRESENTER)  # the whole app's, not a page's: every page's link keeps them


def hidden_from_query(
    params: Mapping[str, str | list[str]], defaults: Mapping[str, Any]
) -> tuple[list[str], list[str]]:
    """The settings a link's ``hide`` names: (those that are settings of the page, in the
    page's order; the names that are not, to report as a bad value of the link). A repeated
    ``hide`` (a list, see `query_values`) hides nothing, and each of its values is reported."""
    given = params.get(HIDE, "")
    if isinstance(given, list | tuple):
        return [], [str(value) for value in given]
    names = [name.strip() for name in str(given).split(",") if name.strip()]
    unknown = [name for name in names if name not in defaults]
    return [key for key in defaults if key in names], unknown


def exercise_query(
    values: Mapping[str, Any], defaults: Mapping[str, Any], hidden: Iterable[str] = ()
) -> dict[str, str]:
    """The query of a link to a page with ``values`` whose controls ``hidden`` are hidden.

    The settings that differ from the defaults, as to_query writes them, and every hidden
    setting's value even where it is the default (the exercise fixes it, whatever a later
    version's default), then ``hide`` with the hidden names in the page's order. Without
    hidden settings it is to_query's plain link. A name that is not a setting: ValueError.
    """
    hidden = list(hidden)
    unknown = [name for name in hidden if name not in defaults]
    if unknown:
        raise ValueError(f"not a setting of this page: {', '.join(unknown)}")
    query = to_query(values, defaults)
    if hidden:
        query |= encode({key: values[key] for key in defaults if key in hidden})
        query[HIDE] = ",".join(key for key in defaults if key in hidden)
    return query


def app_address(page_url: str, page_path: str) -> str:
    """The app's own address, from the address of the page a browser shows (Streamlit's
    ``st.context.url``: the app's address, a reverse proxy's prefix included, then the page's
    url path; the default page has none) and that page's url path ``page_path``.

    Links to the app's pages are built on it (`page_url`): built on the page's own address,
    the Train page's link to itself named it twice (/train/train), a blank page. Only a whole
    last segment equal to ``page_path`` goes (a prefix /lab-train keeps its name); a query or
    a fragment goes too.
    """
    scheme, host, path, _, _ = urlsplit(page_url)
    path = path.rstrip("/")
    if page_path:
        path = path.removesuffix(f"/{page_path.strip('/')}")
    return urlunsplit((scheme, host, path, "", ""))


def page_url(base: str, url_path: str, query: Mapping[str, str]) -> str:
    """The full link to a page: ``base`` (the app's address), its ``url_path`` and ``query``.
    Commas stay commas (``hide=lr,seed``), so a teacher can read and edit the link."""
    url = f"{base.rstrip('/')}/{url_path}"
    return f"{url}?{urlencode(query, safe=',')}" if query else url


def page_defaults(page: str, model: str = config.DEFAULT_MODEL) -> dict[str, Any]:
    """The settings a link to ``page`` (a lesson's, an exercise's: "train" or "compare") leaves
    out; on the Train page, those of a run on ``model`` (train_link_defaults)."""
    return {"train": train_link_defaults(model), "compare": COMPARE_DEFAULTS}[page]
