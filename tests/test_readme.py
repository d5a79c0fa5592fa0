"""The README's library quickstart runs as printed, and does what the README says it does."""

import re
from pathlib import Path

import pytest
import torch

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
