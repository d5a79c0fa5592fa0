"""Streamlit glue shared by the pages, one module per concern:

    session     the language, presenter mode, texts (tr), refusals and errors, the student's id
                and name, the teacher's key, the run store and the runs a page lists
    settings    select boxes whose labels change, a page's settings in the URL, exercise links
    plot_style  the projector layout of figures, a log axis' ticks
    strips      a task's example images and a trained run's predictions
    live_run    the Train page's view of a run while it trains and once it ended
    what_if     the Spectra page's what-ifs: a saved run's rank cut, intruders scaled, a layer off
    inspector   the Compare page's adapter inspector: any model's LoRA file, uploaded and read

Not a page itself (app.py lists the pages); everything worth testing that does not need
Streamlit lives in `core`. The names pages use are imported here, so a page imports them from
app_pages.common whichever module holds them.
"""

from app_pages.common.plot_style import figure_layout, log_ticks, presenter_style, style
from app_pages.common.session import (
    bad_link,
    failed,
    is_teacher,
    key_gate,
    language,
    name_box,
    own_links,
    presenter,
    refused,
    remember_student,
    run_label,
    said,
    status_label,
    store,
    student_id,
    student_names,
    teacher_box,
    tr,
    visible_runs,
)
from app_pages.common.settings import (
    choice,
    current_settings,
    drawn,
    exercise_link,
    fixed_by_link,
    goal_section,
    load_settings,
    relabel,
    save_settings,
    showing,
    titled_select,
)
from app_pages.common.strips import prediction_strip, task_strip

__all__ = [
    "bad_link",
    "choice",
    "current_settings",
    "drawn",
    "exercise_link",
    "failed",
    "figure_layout",
    "fixed_by_link",
    "goal_section",
    "is_teacher",
    "key_gate",
    "language",
    "load_settings",
    "log_ticks",
    "name_box",
    "own_links",
    "prediction_strip",
    "presenter",
    "presenter_style",
    "refused",
    "relabel",
    "remember_student",
    "run_label",
    "said",
    "save_settings",
    "showing",
    "status_label",
    "store",
    "student_id",
    "student_names",
    "style",
    "task_strip",
    "teacher_box",
    "titled_select",
    "tr",
    "visible_runs",
]
