"""What a saved run is asked after training: its spectra against W0, what-ifs (rank cut,
intruders scaled, a layer off), the published findings re-measured, TensorBoard export.

May import: core.common, core.lowrank, core.store, core.training.
"""
