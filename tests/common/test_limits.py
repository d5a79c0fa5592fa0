"""Limits for a shared server: each refusal one line naming the limit and its variable, parsed
from the environment with clear errors, and wide enough for every run the app offers."""

import dataclasses
import pickle

import pytest

from core.analyses import experiments
from core.classroom import lessons, links
from core.common.config import RunConfig, sweep_configs
from core.common.limits import COMMAND_LINE, SERVER, VARIABLES, LimitError, Limits
from core.jobs.executors import check_planned
from core.training import zoo
from core.training.zoo import default_targets


def refusal(limits: Limits, config: RunConfig) -> str:
    with pytest.raises(ValueError) as error:
        limits.check(config)
        check_planned(config, limits)
    return str(error.value)


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            {"steps": 1_000_000_000},
            "steps 1000000000 is above this server's limit of 2000 "
            "(set LORA_LAB_MAX_STEPS to change it)",
        ),
        (
            {"batch_size": 10_000},
            "batch_size 10000 is above this server's limit of 256 "
            "(set LORA_LAB_MAX_BATCH_SIZE to change it)",
        ),
        (
            {"model": "resnet18"},
            "model 'resnet18' is not allowed on this server (allowed: mlp, cnn, vit, gpt; "
            "set LORA_LAB_MODELS to change it)",
        ),
        (  # refused from its settings alone: every epoch is at least one step
            {"epochs": 1_000_000_000},
            "epochs 1000000000 (at least one step each) is above this server's limit of 2000 "
            "(set LORA_LAB_MAX_STEPS to change it)",
        ),
        (  # 3500 training images in batches of 8: 438 steps an epoch, 5 epochs are 2190
            {"epochs": 5, "batch_size": 8},
            "epochs 5 at batch_size 8 (2190 steps) is above this server's limit of 2000 "
            "(set LORA_LAB_MAX_STEPS to change it)",
        ),
    ],
)
def test_each_limit_is_refused_in_one_line_naming_it(changes, message):
    assert refusal(SERVER, RunConfig(**changes)) == message


@pytest.mark.parametrize(
    "refuse, parts",
    [
        (lambda: SERVER.check(RunConfig(steps=5000)), ("max_steps", 5000, 2000)),
        (lambda: SERVER.check(RunConfig(batch_size=512)), ("max_batch_size", 512, 256)),
        (
            lambda: SERVER.check(RunConfig(model="resnet18")),
            ("models", "resnet18", "mlp, cnn, vit, gpt"),
        ),
        (lambda: SERVER.check_jobs(8, 3), ("max_jobs_per_student", 11, 10)),
    ],
)
def test_a_refusal_carries_its_parts_for_a_page_also_through_pickle(refuse, parts):
    """A page says a refusal in the student's language from its parts; a class's queue (a Ray
    actor) raises it to the server through pickle."""
    with pytest.raises(LimitError) as caught:
        refuse()
    error = caught.value
    copy = pickle.loads(pickle.dumps(error))
    assert (error.limit, error.asked, error.allowed) == parts
    assert (str(copy), copy.limit, copy.asked, copy.allowed) == (str(error), *parts)


def test_runs_at_the_limits_pass():
    SERVER.check(RunConfig(steps=2000, batch_size=256, model="vit"))
    check_planned(RunConfig(epochs=4, batch_size=8), SERVER)  # 1752 steps


def test_the_jobs_of_one_student_are_capped():
    SERVER.check_jobs(9, 1)
    with pytest.raises(ValueError) as error:
        SERVER.check_jobs(8, 3)
    assert str(error.value) == (
        "11 runs queued or running for one student is above this server's limit of 10 "
        "(set LORA_LAB_MAX_JOBS_PER_STUDENT to change it)"
    )


def test_the_environment_sets_each_limit():
    environ = {
        "LORA_LAB_MAX_STEPS": "500",
        "LORA_LAB_MAX_BATCH_SIZE": " 32 ",
        "LORA_LAB_MODELS": "mlp, resnet18",
        "LORA_LAB_MAX_JOBS_PER_STUDENT": "3",
        "LORA_LAB_MAX_UPLOAD_MB": "900",
    }
    limits = Limits.from_env(SERVER, zoo.names(), environ)
    assert limits == Limits("this server", 500, 32, ("mlp", "resnet18"), 3, 900)
    assert Limits.from_env(SERVER, zoo.names(), {"LORA_LAB_MODELS": "all"}).models is None
    assert Limits.from_env(COMMAND_LINE, zoo.names(), {}) == COMMAND_LINE
    assert Limits.from_env(SERVER, zoo.names(), {"LORA_LAB_MAX_STEPS": ""}) == SERVER


@pytest.mark.parametrize(
    "variable, value, message",
    [
        (
            "LORA_LAB_MAX_STEPS",
            "lots",
            "LORA_LAB_MAX_STEPS must be a whole number ≥ 1 (got 'lots')",
        ),
        ("LORA_LAB_MAX_STEPS", "0", "LORA_LAB_MAX_STEPS must be a whole number ≥ 1 (got '0')"),
        ("LORA_LAB_MAX_STEPS", "-5", "LORA_LAB_MAX_STEPS must be a whole number ≥ 1"),
        ("LORA_LAB_MAX_STEPS", "2.5", "LORA_LAB_MAX_STEPS must be a whole number ≥ 1"),
        ("LORA_LAB_MAX_STEPS", "²", "LORA_LAB_MAX_STEPS must be a whole number ≥ 1"),
        ("LORA_LAB_MAX_BATCH_SIZE", "big", "LORA_LAB_MAX_BATCH_SIZE must be a whole number"),
        ("LORA_LAB_MAX_JOBS_PER_STUDENT", "none", "LORA_LAB_MAX_JOBS_PER_STUDENT must be a whole"),
        (
            "LORA_LAB_MODELS",
            "mlp,gpt5",
            "LORA_LAB_MODELS names unknown model(s) 'gpt5'; known: mlp",
        ),
        ("LORA_LAB_MODELS", " , ", "LORA_LAB_MODELS must name at least one model, or be 'all'"),
    ],
)
def test_a_bad_variable_is_one_line_naming_it(variable, value, message):
    with pytest.raises(ValueError) as error:
        Limits.from_env(SERVER, zoo.names(), {variable: value})
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_command_line_is_wider_than_the_server_but_bounded():
    assert set(VARIABLES) == {f.name for f in dataclasses.fields(Limits)} - {"scope"}
    assert set(SERVER.models) <= set(zoo.names()) and COMMAND_LINE.models is None
    for name in ("max_steps", "max_batch_size", "max_jobs_per_student"):
        assert getattr(SERVER, name) <= getattr(COMMAND_LINE, name) < float("inf"), name
    with pytest.raises(ValueError, match="the command line's limit of 100000"):
        COMMAND_LINE.check(RunConfig(steps=1_000_000_000))


# -- every run the app and the command line offer fits ------------------------------------------
def train_page_configs() -> dict[str, RunConfig]:
    """The Train page's default run and each Train lesson, as the page builds them."""
    configs = {"train page": RunConfig.from_dict(links.train_defaults())}
    for lesson in lessons.LESSONS:
        if lesson.page == "train":
            configs[lesson.id] = RunConfig.from_dict(links.train_defaults() | lesson.settings)
    return configs


def compare_sweeps() -> dict[str, list[RunConfig]]:
    """The Compare page's default sweep, its largest (every rank it offers), each Compare
    lesson's, and the command line's default sweep: LoRA at each rank plus the baselines."""
    settings = {"compare page": links.COMPARE_DEFAULTS}
    settings["every rank"] = links.COMPARE_DEFAULTS | {"ranks": links.RANK_CHOICES}
    for lesson in lessons.LESSONS:
        if lesson.page == "compare":
            settings[lesson.id] = links.COMPARE_DEFAULTS | lesson.settings
    sweeps = {}
    for name, values in settings.items():  # as the page builds them
        sweeps[name] = links.compare_configs(values, default_targets(values["model"]))
    sweeps["command line sweep"] = sweep_configs(RunConfig(), [1, 2, 4, 8, 16, 32])
    return sweeps


def test_every_run_the_app_offers_fits_the_servers_limits():
    assert lessons.LESSONS and {lesson.page for lesson in lessons.LESSONS} == {"train", "compare"}
    for config in train_page_configs().values():
        config.validate()
        SERVER.check(config)
        check_planned(config, SERVER)
    for name, sweep in compare_sweeps().items():
        assert len(sweep) >= 2, name
        SERVER.check_jobs(0, len(sweep))
        for config in sweep:
            config.validate()
            SERVER.check(config)
    assert len(compare_sweeps()["every rank"]) == len(links.RANK_CHOICES) + 2


def test_the_default_run_and_the_experiments_fit_both_limits():
    """RunConfig() is the command line's default run: one epoch of the default data."""
    gpt = experiments.config(experiments.GPT, rank=64)  # the largest of the gpt experiments
    for config in (
        RunConfig(),
        experiments.config(),
        experiments.config(rank=64, method="full"),
        gpt,
    ):
        for limits in (SERVER, COMMAND_LINE):
            limits.check(config)
            check_planned(config, limits)
    assert experiments.config().steps == experiments.STEPS


def test_the_limits_can_fail_on_a_preset():
    """The check above is not vacuous: a server limit just below the presets refuses them."""
    tight = dataclasses.replace(SERVER, max_steps=links.TRAIN_STEPS - 1)
    with pytest.raises(ValueError, match="LORA_LAB_MAX_STEPS"):
        tight.check(train_page_configs()["train page"])
    few = dataclasses.replace(SERVER, max_jobs_per_student=len(links.RANK_CHOICES) + 1)
    with pytest.raises(ValueError, match="LORA_LAB_MAX_JOBS_PER_STUDENT"):
        few.check_jobs(0, len(compare_sweeps()["every rank"]))
