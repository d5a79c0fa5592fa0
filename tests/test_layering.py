"""The import graph runs one way: pages → core, and inside core from a higher layer to a lower
one, never back. Each layer is a subpackage of core whose docstring says what it may import
("May import: core.common, core.lowrank."): this test reads that line and holds the code to it.

The graph is read from the source (the AST), not from what happens to be imported at run time:
an import tucked inside a function hides a cycle, and is reported as such.
"""

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = sorted((ROOT / "core").rglob("*.py"))
PAGES = [ROOT / "app.py", *sorted((ROOT / "app_pages").rglob("*.py"))]  # and their helpers
# What a page may import besides the standard library: core, drawing, the pages' helpers
# (app_pages/common/: session, settings, plot style, example strips, the Train page's live run)
# and their figures (app_pages/figures/: one module of figure builders per page).
PAGE_PACKAGES = {"core", "streamlit", "plotly", "pandas"}
PAGE_HELPERS = ("app_pages.common", "app_pages.figures")


def module_name(path: Path) -> str:
    """core/store/runs.py → core.store.runs; core/classroom/i18n/__init__.py →
    core.classroom.i18n."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


CORE_MODULES = {module_name(path) for path in CORE}


def imports(node: ast.AST) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement under `node`, with whether it sits inside a function or class."""

    def walk(node: ast.AST, nested: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, nested
            inner = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            yield from walk(child, nested or inner)

    yield from walk(node, False)


def imported_names(statement: ast.Import | ast.ImportFrom) -> set[str]:
    """The modules a statement imports: `from core import data, __version__` → core.training.data
    (a module) and core (for __version__, a name in core/__init__.py)."""
    if isinstance(statement, ast.Import):
        return {alias.name for alias in statement.names}
    if statement.level or not statement.module:  # relative imports: none in this project
        return {"." * statement.level + (statement.module or "")}
    names = set()
    for alias in statement.names:
        submodule = f"{statement.module}.{alias.name}"
        names.add(submodule if submodule in CORE_MODULES else statement.module)
    return names


def core_target(name: str) -> str | None:
    """The core module an imported name lies in (core.store.runs for core.store.runs.RunStore), or
    None."""
    while name and name not in CORE_MODULES:
        name = name.rpartition(".")[0]
    return name or None


def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def core_graph() -> dict[str, set[str]]:
    """core module → the core modules it imports outside functions (a block such as
    `if TYPE_CHECKING:` counts: a lower module that names a higher one's types knows it)."""
    graph = {}
    for path in CORE:
        source = module_name(path)
        targets = set()
        for statement, nested in imports(tree(path)):
            if not nested:
                targets |= {core_target(name) for name in imported_names(statement)}
        graph[source] = targets - {None, source}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, …, a], or None (depth-first search, three colours)."""
    state: dict[str, str] = {}  # absent: unseen; "open": on the current path; "done"
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


# -- the checker itself must be able to fail ------------------------------------------------------
def test_find_cycle_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None  # a diamond
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"a"}, "a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]


def test_function_level_imports_are_told_apart_from_module_level_ones():
    source = (
        "import os\n"
        "from core.training import data\n"
        "if TYPE_CHECKING:\n    from core.store.runs import RunStore\n"
        "def f():\n    from core.training.train import train\n"
        "class C:\n    import core.training.zoo\n"
    )
    found = {
        (sorted(imported_names(statement))[0], nested)
        for statement, nested in imports(ast.parse(source))
    }
    assert found == {
        ("os", False),
        ("core.training.data", False),
        ("core.store.runs", False),
        ("core.training.train", True),
        ("core.training.zoo", True),
    }
    assert (
        core_target("core.store.runs.RunStore") == "core.store.runs"
        and core_target("torch") is None
    )


# -- core -----------------------------------------------------------------------------------------
def test_core_has_no_import_cycle():
    graph = core_graph()
    assert {"core.common.config", "core.training.train", "core.store.runs"} <= set(graph)
    assert "core.common.config" in graph["core.training.train"]  # the graph does hold the imports
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in core: " + " → ".join(cycle or [])


def test_core_imports_no_core_module_inside_a_function():
    """An import inside a function hides a cycle (or a slow import) instead of removing it.
    core/__main__.py loads its commands with importlib after parsing, by name, on purpose."""
    hidden = []
    for path in CORE:
        for statement, nested in imports(tree(path)):
            targets = {core_target(name) for name in imported_names(statement)} - {None}
            if nested and targets:
                hidden.append(f"{module_name(path)}:{statement.lineno} imports {sorted(targets)}")
    assert not hidden, "function-level imports of core modules:\n" + "\n".join(hidden)


def test_no_core_file_imports_streamlit_or_a_page():
    assert len(CORE) > 10
    for path in CORE:
        top_level = {
            name.split(".")[0]
            for statement, _ in imports(tree(path))
            for name in imported_names(statement)
        }
        assert not top_level & {"streamlit", "app_pages", "app"}, path.name


def test_importing_all_of_core_loads_no_streamlit():
    names = sorted(CORE_MODULES - {"core.__main__"})
    code = f"import sys, {', '.join(names)}; print('streamlit' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def layer(module: str) -> str:
    """core.store.runs → core.store; core and core.__main__ (the entry points) → core."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or module in LAYERS else "core"


LAYERS = sorted(
    module_name(path)
    for path in (ROOT / "core").glob("*/__init__.py")
    if path.parent.name != "__pycache__"
)


def allowed(package: str) -> set[str]:
    """The layers a layer's docstring lets it import: its "May import:" line."""
    doc = ast.get_docstring(tree(ROOT / package.replace(".", "/") / "__init__.py")) or ""
    parts = doc.split("May import:")
    assert len(parts) == 2, f"{package}'s docstring must say once what it may import"
    named = " ".join(parts[1].split("\n\n")[0].split()).rstrip(".")
    return set() if named == "nothing of core" else {name.strip() for name in named.split(",")}


def test_every_layer_says_what_it_may_import_and_names_only_layers():
    assert {"core.common", "core.store", "core.training", "core.cli"} <= set(LAYERS)
    for package in LAYERS:
        assert allowed(package) <= set(LAYERS) - {package}, package


def test_each_layer_imports_only_the_layers_its_docstring_allows():
    strays = []
    for source, targets in core_graph().items():
        here = layer(source)
        if here == "core":
            continue
        for target in targets:
            there = layer(target)
            if there != here and there not in allowed(here) | {"core"}:
                strays.append(f"{source} imports {target}")
    assert not strays, "imports against the layers:\n" + "\n".join(sorted(strays))


def test_the_store_loads_nothing_that_trains_rebuilds_or_exports_a_model():
    """The run store is a leaf: importing it, in a fresh process, loads no module of the
    training or of the low-rank math (so it builds no model, and can be used without them)."""
    code = (
        "import sys, core.store.runs; "
        "print(sorted(m for m in sys.modules if m.startswith(('core.training', 'core.lowrank'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_layers_have_an_order():
    """What the docstrings allow is itself one way: no two layers may import each other."""
    graph = {package: allowed(package) for package in LAYERS}
    assert find_cycle(graph) is None


# -- pages ----------------------------------------------------------------------------------------
def test_pages_import_only_core_drawing_libraries_the_standard_library_and_their_helper():
    """A page is widgets, figures and calls into core: numbers come from core, never from a
    page's own numpy or torch."""
    assert len(PAGES) > 5
    allowed = PAGE_PACKAGES | set(sys.stdlib_module_names)
    strays = []
    for path in PAGES:
        for statement, _ in imports(tree(path)):
            for name in imported_names(statement):
                if name.split(".")[0] == "app_pages":
                    ok = any(name == h or name.startswith(h + ".") for h in PAGE_HELPERS)
                else:
                    ok = name.split(".")[0] in allowed
                if not ok:
                    strays.append(f"{path.relative_to(ROOT)}:{statement.lineno} imports {name}")
    assert not strays, "\n".join(strays)


# -- tests and benchmarks -------------------------------------------------------------------------
# pytest imports a test module by its file name (test_runs, conftest); what two of them, or a
# test and a benchmark, share lives in tests/support/, imported as tests.support from the root.
TESTS = sorted(path for path in (ROOT / "tests").rglob("*.py") if "support" not in path.parts)
SUPPORT = sorted((ROOT / "tests" / "support").glob("*.py"))
BENCH = sorted((ROOT / "bench").glob("*.py"))
TEST_MODULES = {path.stem for path in TESTS + SUPPORT} | {"support"}


def imports_of_tests(source: ast.Module) -> list[str]:
    """The test modules `source` imports: by file name (test_runs, conftest; support or servers,
    which only pytest's path or a sys.path edit finds), or as tests.X for all but tests.support."""
    found = []
    for statement, _ in imports(source):
        for name in imported_names(statement):
            top = name.split(".")[0]
            if top in TEST_MODULES or (top == "tests" and not name.startswith("tests.support")):
                found.append(name)
    return found


def edits_sys_path(source: ast.Module) -> bool:
    """Whether `source` touches sys.path (to reach a folder it could import from the root)."""
    return any(
        isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
        for node in ast.walk(source)
    )


def test_the_test_checker_finds_test_modules_and_path_edits():
    source = ast.parse(
        "import os, test_runs\nfrom conftest import serve\nfrom servers import start_app\n"
        "from tests.support.store import SMALL\nfrom tests import test_jobs\n"
        "from tests.test_lora import adapted\nfrom core.store import runs\n"
    )
    assert imports_of_tests(source) == [
        "test_runs", "conftest", "servers", "tests", "tests.test_lora"
    ]  # fmt: skip
    assert edits_sys_path(ast.parse("import sys\nsys.path.insert(0, 'tests')\n"))
    assert not edits_sys_path(ast.parse("import sys, os\nprint(sys.argv, os.path.sep)\n"))


def test_no_test_module_or_benchmark_imports_a_test_module():
    """A test module that imports another runs that one's module code (and, before pytest's
    path was set, failed to import at all); a benchmark reaches tests/ only for its support."""
    assert len(TESTS) > 20 and len(SUPPORT) > 4 and len(BENCH) > 4
    strays = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in TESTS + SUPPORT + BENCH
        for name in imports_of_tests(tree(path))
    ]
    assert not strays, "import tests/support/ instead:\n" + "\n".join(strays)


def test_no_benchmark_edits_sys_path():
    """bench/ runs from the repository root as a package (`python -m bench.classroom`), where
    core and tests.support import as they are."""
    edits = [str(path.relative_to(ROOT)) for path in BENCH if edits_sys_path(tree(path))]
    assert not edits, f"sys.path edited in {edits}: run the script with python -m bench.NAME"
