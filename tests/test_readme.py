"""The README's library quickstart runs as printed, and does what the README says it does."""

import re
from pathlib import Path

import pytest
import torch

from core.common import limits
from core.common.config import BOUNDS, SHIFT_PARAM_BOUNDS, kind_of_model
from core.common.limits import COMMAND_LINE, SERVER, Limits
from core.lowrank import peft_io
from core.training import adapters, zoo

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "## Use it as a library"

pytestmark = pytest.mark.usefixtures("one_thread")


def quickstart() -> str:
    """The first ```python block under the library section's heading."""
    text = README.read_text()
    assert SECTION in text, f"README.md has no {SECTION!r} section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert blocks, f"no python block under {SECTION!r}"
    return blocks[0]


def test_the_library_quickstart_runs_and_learns(capsys):
    code = quickstart()
    with torch.random.fork_rng(devices=[]):
        exec(compile(code, f"{README.name}:quickstart", "exec"), {"__name__": "quickstart"})
    lines = capsys.readouterr().out.splitlines()
    before, after = map(int, re.findall(r"(\d+)%", lines[0]))
    assert after > before + 30, lines[0]  # the README says 38 % → 88 %
    spectra = [line for line in lines[1:] if "sigma of delta_W" in line]
    assert [line.split()[0] for line in spectra] == ["fc1", "fc2"]
    for line in spectra:  # rank 4: four singular values, all of them nonzero
        sigma = [float(v) for v in re.findall(r"\d+\.\d+", line.split("tensor", 1)[1])]
        assert len(sigma) == 4 and min(sigma) > 0, line


def bounds_section() -> str:
    text = README.read_text()
    heading = "### Every number has a bound"
    assert heading in text, f"README.md has no {heading!r} section"
    return text.split(heading, 1)[1].split("\n#", 1)[0]


def expected_bound_rows() -> list[str]:
    """The README's table rows, as the code's bounds say them (str(Bound): as a refusal does)."""
    rows = [f"| `{name}` | {bound} |" for name, bound in BOUNDS.items()]
    rows += [f"| shift parameter `{name}` | {b} |" for name, b in SHIFT_PARAM_BOUNDS.items()]
    rows.append(f"| a run's classes | {zoo.CLASSES} |")
    mib = 2**20
    rows.append(
        f"| an uploaded adapter | a zip of at most {adapters.MAX_ZIP_BYTES // mib} MiB and "
        f"{adapters.MAX_ENTRIES} entries; its weights at most {adapters.MAX_FILE_BYTES // mib} MiB "
        f"unpacked, its `{peft_io.CONFIG_FILE}` at most {peft_io.MAX_CONFIG_BYTES // mib} MiB |"
    )
    return rows


def limit_cells(values: Limits, name: str) -> str:
    value = getattr(values, name)
    if name == "models":
        return limits.EVERY_MODEL if value is None else ", ".join(value)
    return str(value)


def test_the_readme_bounds_are_the_code_s():
    """Every number's bound in the README's table is the one the code refuses past: each row,
    in order; and each server limit with its variable and both defaults."""
    section = bounds_section()
    lines = section.splitlines()
    start = lines.index("| setting | what it may be |") + 2  # below the header and its rule
    table = lines[start : lines.index("", start)]
    assert table == expected_bound_rows(), "\n".join(expected_bound_rows())
    for name, variable in limits.VARIABLES.items():
        server, command_line = (limit_cells(v, name) for v in (SERVER, COMMAND_LINE))
        assert re.search(
            rf"^\| `{variable}` \| [^|]+ \| {re.escape(server)} \| {re.escape(command_line)} \|$",
            section,
            flags=re.MULTILINE,
        ), f"{variable}: {server} on a server, {command_line} on the command line"


def test_the_readme_model_table_is_the_model_cards():
    """Each built-in model's accuracy (an image model) or bits per character (a text model) in
    the README is its card's (test_zoo checks each card against its shipped weights), so a
    retrained model cannot leave the README behind."""
    text = README.read_text()
    rows = dict(re.findall(r"^\| `(\w+)`[^|]*\|[^|]*\| (\d+\.\d) % \|$", text, re.M))
    bits = dict(re.findall(r"^\| `(\w+)`[^|]*\|[^|]*\| (\d+\.\d\d) bits \|$", text, re.M))
    built_in = [name for name in zoo.names() if zoo.card(name)["offline"]]
    assert sorted(rows) == sorted(n for n in built_in if kind_of_model(n) == "images")
    assert sorted(bits) == sorted(n for n in built_in if kind_of_model(n) == "text")
    for name, value in rows.items():
        assert value == f"{zoo.card(name)['test_acc'] * 100:.1f}", name
    for name, value in bits.items():
        assert value == f"{zoo.card(name)['test_bpc']:.2f}", name


def layout_section() -> str:
    text = README.read_text()
    assert "## Layout\n" in text, "README.md has no '## Layout' section"
    return text.split("## Layout\n", 1)[1].split("\n## ", 1)[0]


def layer_blocks(layout: str) -> dict[str, str]:
    """Each layer of core's line in the layout (six spaces in: "      store/ …") with the module
    lines under it (eight spaces in)."""
    blocks: dict[str, str] = {}
    current = None
    core = layout.split("\n    core/", 1)[1].split("\n    app.py", 1)[0]  # not app_pages/'s
    for line in core.splitlines():
        if match := re.match(r" {6}(\w+)/", line):
            current = match.group(1)
            blocks[current] = line
        elif current and line.startswith(" " * 8):
            blocks[current] += "\n" + line
        else:
            current = None
    return blocks


def test_the_layout_names_every_layer_and_module_of_core():
    """A newcomer finds each file of core in the README's layout, under its layer's folder: a
    module added or moved without its line there fails here."""
    blocks = layer_blocks(layout_section())
    layers = sorted(path.parent for path in (README.parent / "core").glob("*/__init__.py"))
    assert len(layers) >= 8
    for layer in layers:
        assert layer.name in blocks, f"the README's layout has no line for core/{layer.name}/"
        for module in sorted(layer.glob("*.py")):
            if module.name != "__init__.py":
                assert re.search(rf"\b{module.stem}\b", blocks[layer.name]), (
                    f"{module} is not listed"
                )
