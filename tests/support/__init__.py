"""What more than one test module, and the benchmarks in bench/, use: no tests of its own.

    from tests.support.app_session import open_page   # a page in AppTest, as a new session
    from tests.support.browser import new_page         # a page in headless Chromium
    from tests.support.servers import start_app        # `streamlit run app.py` on loopback

app_session (AppTest), browser (a page in Chromium), servers (the app's server and the system
Chromium: the browser tests and bench/ start both), pool_checks (what the scheduler tests check
of a job), postgres (the test PostgreSQL server), store (a small run, SQL from outside, a
model's outputs, an adapter zip), toy_models (small models, with and without adapters).

Imported as `tests.support` from the repository root: pytest puts the root on the path
(pyproject.toml's pythonpath), and bench scripts run from it (`python -m bench.classroom`). A
test module never imports another test module (tests/test_layering.py checks it): what two of
them share lives here.
"""
