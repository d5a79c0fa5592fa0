"""Training as jobs on a shared server: the fair scheduler, the class's one queue shared over
Ray, and the executors that run a job (local worker processes, Ray tasks).

May import: core.common, core.lowrank, core.store, core.training.
"""
