"""The import graph runs one way: pages → core. core never imports streamlit or a page."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = sorted((ROOT / "core").rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_core_file_imports_streamlit_or_a_page():
    assert len(CORE) > 10
    for path in CORE:
        assert not imported_modules(path) & {"streamlit", "app_pages", "app"}, path.name


def test_importing_all_of_core_loads_no_streamlit():
    names = [".".join(p.relative_to(ROOT).with_suffix("").parts) for p in CORE]
    modules = ", ".join(n.removesuffix(".__init__") for n in names if not n.endswith("__main__"))
    code = f"import sys, {modules}; print('streamlit' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
