"""LoRA Lab: the entry point (`streamlit run app.py`).

Sets up the pages and the sidebar (language, README, version); each page lives
in app_pages/ and is a thin view over the UI-free `core` package. (Not `pages/`:
Streamlit would also treat that folder as an old-style multipage app.)
"""

import streamlit as st

from app_pages.common import (
    failed,
    is_teacher,
    key_gate,
    language,
    name_box,
    presenter,
    presenter_style,
    relabel,
    remember_student,
    showing,
    store,
    teacher_box,
    tr,
)
from core import __version__
from core.classroom.i18n import DEFAULT_LANGUAGE, LANGUAGES
from core.classroom.links import PRESENTER
from core.common.paths import ASSETS, FolderError
from core.jobs import pool as jobs
from core.store.runs import StoreError


def main() -> None:
    # The tab icon ships with the app (sent as a data: URL): a ":material/…:" page icon would
    # make every browser fetch it from a font host, and a class may have no internet.
    st.set_page_config(page_title="LoRA Lab", page_icon=ASSETS / "icon.svg", layout="wide")
    try:
        store()  # a run store that cannot be used (LORA_LAB_DB, LORA_LAB_HOME) is said at once
        jobs.pool()  # start the training workers now, so the first click on Train starts at once
        key_gate()  # a teacher key too short to keep the class's views closed is said at once
    except (StoreError, FolderError) as error:
        failed(error)  # one line that names the setting; tried again at the next rerun
        st.stop()
    except ValueError as error:  # a bad server setting ($LORA_LAB_RAY, a limit, the teacher key)
        st.error(tr("server.bad_setting", error=error))
        st.stop()

    with st.sidebar:
        st.selectbox(
            tr("sidebar.language"),
            list(LANGUAGES),
            format_func=LANGUAGES.get,
            key="lang",
        )
        if language() == DEFAULT_LANGUAGE:
            st.query_params.pop("lang", None)
        else:
            st.query_params["lang"] = language()
        presenter()  # a link's ?presenter=true sets the switch's first value
        st.toggle(tr("presenter.toggle"), key=PRESENTER, help=tr("presenter.help"))
        if presenter():
            st.query_params[PRESENTER] = "true"
        else:
            st.query_params.pop(PRESENTER, None)
        remember_student()  # the same student after a reload, in a new tab, after a restart
        name_box()
        teacher_box()  # before the pages are listed: a key typed there opens the Class page
        st.caption(tr("sidebar.version", version=__version__))
    pages = [
        st.Page(
            "app_pages/learn.py", title=tr("nav.learn"), icon=":material/school:", default=True
        ),
        st.Page(
            "app_pages/train.py",
            title=tr("nav.train"),
            icon=":material/model_training:",
            url_path="train",
        ),
        st.Page(
            "app_pages/spectra.py",
            title=tr("nav.spectra"),
            icon=":material/insights:",
            url_path="spectra",
        ),
        st.Page(
            "app_pages/compare.py",
            title=tr("nav.compare"),
            icon=":material/compare_arrows:",
            url_path="compare",
        ),
        st.Page(
            "app_pages/readme.py", title="README", icon=":material/description:", url_path="readme"
        ),
    ]
    if is_teacher():  # not registered for anyone else: /class is then the default page
        pages.append(
            st.Page(
                "app_pages/class_page.py",
                title=tr("nav.class"),
                icon=":material/groups:",
                url_path="class",
            )
        )
    page = st.navigation(pages)
    showing(page.url_path)  # links to the app's pages start from the app's address

    presenter_style()
    relabel()  # before a page draws its select boxes (see common.choice)

    try:
        page.run()
    except StoreError as error:  # e.g. the run database restarting: said, and tried again next
        failed(error)


# Training workers are started with multiprocessing's "spawn", which imports the script that
# `streamlit run` executes (as "__mp_main__"): the app must only be drawn when run as the app.
if __name__ == "__main__":
    main()
