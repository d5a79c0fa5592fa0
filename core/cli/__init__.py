"""The command line's commands (`python -m core …`; the parser is core/__main__.py).

May import: core.common, core.lowrank, core.store, core.training, core.analyses, core.jobs,
core.classroom.
"""
