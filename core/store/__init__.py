"""The run store: every run's config, curves, spectra and trained tensors, in SQLite or
PostgreSQL. It keeps and returns runs; it never trains, rebuilds or exports a model, so it can
be used and tested without torch building anything.

May import: core.common.
"""
