"""Settings ↔ URL query parameters, so that a copied link reopens the same configuration.

A page's settings are a flat dict of plain values (int, float, bool, str, list
of str, dict) with known defaults. Only the values that differ from the default
go into the link, so links stay short; reading a link parses each value by the
type of its default and reports the ones it could not read instead of failing.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

_TRUE, _FALSE = "1", "0"


def _encode(value: Any) -> str:
    if isinstance(value, bool):
        return _TRUE if value else _FALSE
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)  # str(0.001) == "0.001": floats print their shortest exact form


def _decode(text: str, default: Any) -> Any:
    """Parse ``text`` as the type of ``default``; ValueError if it is not one."""
    if isinstance(default, bool):
        if text not in (_TRUE, _FALSE):
            raise ValueError(text)
        return text == _TRUE
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        value = float(text)
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(text)
        return value
    if isinstance(default, list | tuple):
        items = [item for item in text.split(",") if item]
        return [_decode(item, default[0]) for item in items] if default else items
    if isinstance(default, dict):
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError(text)
        return value
    return text


def encode(values: Mapping[str, Any]) -> dict[str, str]:
    """Every setting in ``values`` as a query parameter."""
    return {key: _encode(value) for key, value in values.items()}


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
    another choice. Missing or unreadable settings take their default; keys that are not
    settings (another page's, the language) are ignored.
    """
    choices = choices or {}
    values = dict(defaults)
    unreadable = []
    for key, default in defaults.items():
        if key not in params:
            continue
        try:
            value = _decode(params[key], default)
        except ValueError:
            unreadable.append(key)
            continue
        if key in choices:
            allowed = list(choices[key])
            items = value if isinstance(value, list) else [value]
            if any(item not in allowed for item in items):
                unreadable.append(key)
                continue
        values[key] = value
    return values, unreadable


def _normalise(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# ----------------------------------------------------------------------------- each page's settings

TRAIN_STEPS = 200  # a run a class can watch: ~10 s for the MLP on a laptop CPU
TRAIN_KEYS = (
    "model", "dataset", "shift", "shift_params", "method", "rank", "alpha", "targets", "init",
    "scaling", "dora", "lora_plus_ratio", "dropout", "top_k", "lr", "steps", "batch_size", "seed",
)  # fmt: skip


def train_defaults() -> dict[str, Any]:
    """The Train page's settings: RunConfig's defaults, with a number of steps to watch.

    ``targets`` stays a string ("all-linear" or comma-separated names/globs), as
    RunConfig.from_dict reads it.
    """
    from core.train import RunConfig  # train pulls in torch; the Learn page does not need it

    config = RunConfig(steps=TRAIN_STEPS).to_dict()
    return {key: config[key] for key in TRAIN_KEYS}


SPECTRA_DEFAULTS: dict[str, Any] = {
    "run": 0,  # run id, 0 = the newest run
    "layer": "",  # "" = the first adapted layer
    "other": 0,  # second run for the subspace similarity, 0 = none
    "normalised": False,
    "everyone": False,  # list every run on the server, not only this session's
}

COMPARE_RANKS = [1, 2, 4, 8, 16, 32, 64]  # the ranks a Compare sweep offers
COMPARE_DEFAULTS: dict[str, Any] = {
    "model": "mlp",
    "dataset": "mnist-5k",
    "shift": "rotate",
    "ranks": [1, 2, 4, 8, 16],
    "baselines": True,  # also run head-only and full fine-tuning
    "steps": TRAIN_STEPS,
    "seed": 0,
    "runs": [],  # ids of the runs whose curves are overlaid (strings, as in the link)
    "everyone": False,
}
