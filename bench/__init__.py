"""Benchmarks that print figures (readme_figures.py writes the README's Results). Each is a
module of this package, run from the repository root:

    .venv/bin/python -m bench.classroom --sessions 10

so that `core` and `tests.support` (the app's server and browser, shared with the tests)
import as they are, with no edit of sys.path.
"""
