"""What every layer stands on: a run's settings (RunConfig, no torch), the limits a server
puts on a job, where LoRA Lab keeps its files, and how text from a user is made safe to show.

May import: nothing of core.
"""
