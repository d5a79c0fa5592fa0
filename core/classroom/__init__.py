"""What a page shows and a class shares, without streamlit: links and each page's defaults,
lessons, the live view of a running job, the Learn page's numbers, the two languages, and the
page models that turn a form into a config or a reason.

May import: core.common, core.lowrank, core.store, core.training, core.analyses, core.jobs.
"""
