"""The models, the data and their shifts, and training: the loop, recording a run into the
store, rebuilding a saved run's model, measuring it again, exporting its adapter, and the
adapters imported from PEFT.

May import: core.common, core.lowrank, core.store.
"""
