"""The models, the data and their shifts, and training: the loop, recording a run into the
store, rebuilding a saved run's model, measuring it again, and the adapters imported from PEFT.

May import: core.common, core.lowrank, core.store.
"""
